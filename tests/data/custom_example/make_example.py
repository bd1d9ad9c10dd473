"""Writes the custom-source example: 36 items in 4 categories, 48 users, 5-9 interactions each.

Synthetic, made up for the tests (no real product or person). A user mostly walks along the
"product line" of one category (item k -> k+1), so the next item is learnable. The same data is
written as CSV (items.csv, interactions.csv) and as JSON Lines (items.jsonl, interactions.jsonl).
Run from anywhere: ``python tests/data/custom_example/make_example.py``.
"""
import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CATEGORIES = {
    "Camping": (["Trailhead", "Northpine"], ["Lantern", "Tent", "Sleeping Bag", "Camp Stove", "Water Filter",
                                             "Hammock", "Trekking Poles", "Headlamp", "Cooler"]),
    "Kitchen": (["Copperleaf", "Basil & Co"], ["Chef Knife", "Cutting Board", "Dutch Oven", "Whisk", "Skillet",
                                               "Salad Spinner", "Peeler", "Spice Rack", "Kettle"]),
    "Garden": (["Greenrow", "Rootwise"], ["Trowel", "Pruning Shears", "Watering Can", "Seed Tray", "Hose Reel",
                                          "Kneeler", "Rake", "Planter Box", "Compost Bin"]),
    "Office": (["Deskline", "Paperfox"], ["Notebook", "Gel Pens", "Desk Lamp", "Stapler", "File Box",
                                          "Monitor Stand", "Sticky Notes", "Letter Tray", "Whiteboard"]),
}
SIZES = ["Mini", "Classic", "Pro"]


def build(seed: int = 7):
    rng = random.Random(seed)
    items, lines = [], {}
    for c, (category, (brands, nouns)) in enumerate(CATEGORIES.items()):
        lines[category] = []
        for k, noun in enumerate(nouns):
            item_id = f"{category[:3].upper()}-{k + 1:02d}"
            brand = brands[k % 2]
            items.append({
                "item_id": item_id,
                "title": f"{brand} {SIZES[k % 3]} {noun}",
                # a few items carry no description or brand (both optional)
                "description": "" if k == 4 else f"A {SIZES[k % 3].lower()} {noun.lower()} for {category.lower()} fans.",
                "brand": "" if (c, k) == (1, 7) else brand,
                "categories": ["Home & Outdoors", category] if c != 3 else ["Office Products"],
            })
            lines[category].append(item_id)
    interactions = []
    time = 1_600_000_000
    for u in range(48):
        category = list(CATEGORIES)[u % 4]
        line = lines[category]
        position = rng.randrange(len(line))
        for step in range(rng.randint(5, 9)):
            if rng.random() < 0.8:
                position = (position + 1) % len(line)
                item = line[position]
            else:
                item = rng.choice([i["item_id"] for i in items])
            time += rng.randint(600, 86_400)
            rating = None if rng.random() < 0.1 else rng.randint(3, 5) if item in line else rng.randint(1, 4)
            interactions.append({"user_id": f"user{u:02d}", "item_id": item, "timestamp": time, "rating": rating})
    return items, interactions


def main() -> None:
    items, interactions = build()
    with open(HERE / "items.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["item_id", "title", "description", "brand", "categories"])
        writer.writeheader()
        writer.writerows({**i, "categories": "|".join(i["categories"])} for i in items)
    with open(HERE / "interactions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["user_id", "item_id", "timestamp", "rating"])
        writer.writeheader()
        writer.writerows({**r, "rating": "" if r["rating"] is None else r["rating"]} for r in interactions)
    with open(HERE / "items.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({k: v for k, v in i.items() if v != ""}) + "\n" for i in items)
    with open(HERE / "interactions.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in interactions)


if __name__ == "__main__":
    main()
