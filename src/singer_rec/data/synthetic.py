"""Deterministic synthetic demo data shaped like the Amazon 2018 dumps.

The generator returns review records (``reviewerID``, ``asin``, ``unixReviewTime``, ...) and meta
records (``asin``, ``title``, ``description`` list, ``brand``, ``category`` list) exactly as the
Amazon 2018 JSON lines hold them, so the demo goes through the same parsing and cleaning as real
data. Nothing is written to disk.

Structure that makes next-item prediction learnable:

* items belong to one category and one brand of that category; within a category they form a
  ring (a product line: item k is followed by item k+1 or k+2);
* each user has a main category (most steps) and a side category, and a favourite brand;
* a step continues along the ring from the user's last item in that category with probability
  ``p_follow_ring``, else picks an item of the favourite brand (or any item of the category).

A few meta records carry HTML remnants (cleaned by ingest) and ``n_untitled_items`` have a broken
title (dropped by ingest), as in the real dumps.
"""
from __future__ import annotations

import calendar
import time

import numpy as np

CATEGORY_NAMES = [
    ("Power Tools", ["Drill", "Sander", "Jigsaw", "Grinder", "Router", "Nailer"]),
    ("Garden", ["Hose", "Sprinkler", "Pruner", "Rake", "Planter", "Trowel"]),
    ("Kitchen", ["Kettle", "Blender", "Skillet", "Toaster", "Grater", "Whisk"]),
    ("Office", ["Stapler", "Notebook", "Pen Set", "Binder", "Desk Lamp", "Label Maker"]),
    ("Outdoor", ["Tent", "Lantern", "Backpack", "Sleeping Bag", "Stove", "Cooler"]),
    ("Lab Supplies", ["Pipette", "Beaker", "Microscope", "Scale", "Centrifuge", "Hot Plate"]),
    ("Audio", ["Headphones", "Speaker", "Microphone", "Amplifier", "Earbuds", "Soundbar"]),
    ("Pet Care", ["Leash", "Pet Bed", "Feeder", "Grooming Brush", "Cat Tree", "Pet Carrier"]),
]
BRAND_STEMS = [
    "Acme", "Borealis", "Cobalt", "Dunmore", "Everline", "Fjord", "Granite", "Harbor", "Ironwood",
    "Juniper", "Kestrel", "Lumen", "Meridian", "Northway", "Onyx", "Pinecrest", "Quarry",
    "Redwood", "Summit", "Tidewater", "Umber", "Vantage", "Willow", "Yarrow",
]
ADJECTIVES = ["Compact", "Heavy-Duty", "Classic", "Pro", "Lightweight", "Premium", "Eco", "Smart"]
START_TIME = calendar.timegm((2016, 10, 1, 0, 0, 0))  # UTC, machine-independent
DAY = 86400


def _day_string(timestamp: int) -> str:
    moment = time.gmtime(timestamp)
    return f"{moment.tm_mon:02d} {moment.tm_mday}, {moment.tm_year}"


def generate_amazon_like(
    seed: int,
    n_users: int = 400,
    n_items: int = 240,
    n_categories: int = 6,
    brands_per_category: int = 4,
    min_sequence_length: int = 6,
    max_sequence_length: int = 12,
    p_main_category: float = 0.85,
    p_follow_ring: float = 0.7,
    p_favourite_brand: float = 0.6,
    n_untitled_items: int = 2,
    span_days: int = 760,
) -> tuple[list[dict], list[dict]]:
    """``(reviews, meta)``: Amazon-2018-shaped records, identical for the same arguments.

    Sequence lengths are uniform in ``[min_sequence_length, max_sequence_length]`` (about
    ``n_users * (min+max)/2`` reviews). Item ``asin``s are ``B0`` + 8 digits, users ``A`` + 12
    characters; each user reviews on distinct days, so a user's order is unambiguous.
    """
    if not 1 <= n_categories <= len(CATEGORY_NAMES):
        raise ValueError(f"n_categories must be in 1..{len(CATEGORY_NAMES)}, got {n_categories}")
    if n_items < 2 * n_categories:
        raise ValueError(f"n_items ({n_items}) must be at least 2 per category")
    if not 2 <= min_sequence_length <= max_sequence_length:
        raise ValueError("need 2 <= min_sequence_length <= max_sequence_length")
    rng = np.random.default_rng(seed)

    # catalogue: categories, their brands, items on a ring per category
    category_items: list[list[int]] = [[] for _ in range(n_categories)]
    item_category = np.arange(n_items) % n_categories
    for item, category in enumerate(item_category):
        category_items[category].append(item)
    brand_names = list(rng.permutation(BRAND_STEMS))
    brands = [
        [f"{brand_names[(c * brands_per_category + b) % len(brand_names)]}"
         + ("" if c * brands_per_category + b < len(brand_names) else f" {c}")
         for b in range(brands_per_category)]
        for c in range(n_categories)
    ]
    item_brand = np.empty(n_items, dtype=np.int64)
    asins = [f"B0{index:08d}" for index in rng.choice(10**8, size=n_items, replace=False)]
    meta: list[dict] = []
    for category in range(n_categories):
        name, nouns = CATEGORY_NAMES[category]
        for position, item in enumerate(category_items[category]):
            brand = int(rng.integers(brands_per_category))
            item_brand[item] = brand
            noun = nouns[position % len(nouns)]
            adjective = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
            brand_name = brands[category][brand]
            title = f"{brand_name} {adjective} {noun} {chr(65 + position % 26)}{100 + position}"
            description = [
                f"The {adjective.lower()} {noun.lower()} from {brand_name}'s {name.lower()} line.",
                f"Model {position + 1} of {len(category_items[category])}; pairs well with the next model.",
            ]
            if item % 17 == 0:  # HTML remnants, as in real dumps
                description = [f"<p>{description[0]}</p>", f"{description[1]} &amp; more<br />"]
                title = title.replace(" ", "&nbsp;", 1)
            meta.append(
                {
                    "asin": asins[item],
                    "title": title,
                    "description": description,
                    "brand": brand_name,
                    "category": ["Synthetic Store", name],
                    "also_buy": [],
                    "price": f"${5 + (item * 7) % 90}.99",
                }
            )
    untitled_asins = [f"B1{index:08d}" for index in range(n_untitled_items)]
    for asin in untitled_asins:
        meta.append({"asin": asin, "title": '<span class="a-size-medium a-color-secondary"',
                     "description": [], "brand": "", "category": ["Synthetic Store"]})

    # users and their chronological sequences
    reviews: list[dict] = []
    for user_index in range(n_users):
        user = f"A{user_index:04d}" + "".join(rng.choice(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), size=8))
        main = int(rng.integers(n_categories))
        side = int((main + 1 + rng.integers(n_categories - 1)) % n_categories) if n_categories > 1 else main
        favourite_brand = int(rng.integers(brands_per_category))
        length = int(rng.integers(min_sequence_length, max_sequence_length + 1))
        last_position: dict[int, int] = {}
        day = int(rng.integers(0, max(1, span_days - 3 * length)))
        sequence: list[str] = []
        for _ in range(length):
            category = main if rng.random() < p_main_category else side
            ring = category_items[category]
            if category in last_position and rng.random() < p_follow_ring:
                position = (last_position[category] + 1 + int(rng.random() < 0.3)) % len(ring)
            else:
                candidates = [
                    p for p, item in enumerate(ring) if item_brand[item] == favourite_brand
                ]
                if not candidates or rng.random() >= p_favourite_brand:
                    candidates = list(range(len(ring)))
                position = int(rng.choice(candidates))
            last_position[category] = position
            sequence.append(asins[ring[position]])
        if n_untitled_items and user_index % 50 == 0:  # a few reviews of items without title
            sequence.insert(length // 2, untitled_asins[user_index // 50 % n_untitled_items])
        for asin in sequence:
            day += 1 + int(rng.integers(3))
            timestamp = START_TIME + day * DAY
            reviews.append(
                {
                    "overall": float(rng.integers(3, 6)),
                    "verified": True,
                    "reviewTime": _day_string(timestamp),
                    "reviewerID": user,
                    "asin": asin,
                    "reviewerName": f"Customer {user_index}",
                    "reviewText": "Works as described.",
                    "summary": "Good",
                    "unixReviewTime": timestamp,
                }
            )
    # dumps are grouped by item, not by user
    order = sorted(range(len(reviews)), key=lambda i: (reviews[i]["asin"], i))
    return [reviews[i] for i in order], meta


# --- a large catalogue for scale benchmarks (does not touch the demo generator above) ---------------

_SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def _catalogue_words(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct pronounceable pseudo-words of 2-4 syllables."""
    words: dict[str, None] = {}
    while len(words) < count:
        lengths = rng.integers(2, 5, size=count)
        picks = rng.integers(len(_SYLLABLES), size=(count, 4))
        for length, row in zip(lengths.tolist(), picks.tolist()):
            words["".join(_SYLLABLES[s] for s in row[:length])] = None
            if len(words) == count:
                break
    return np.array(list(words), dtype=object)


def catalogue_records(
    seed: int,
    n_items: int,
    *,
    min_reviews_per_item: int = 5,
    mean_reviews_per_item: float = 10.0,
    max_reviews_per_item: int = 2000,
    min_user_reviews: int = 5,
    mean_user_reviews: float = 9.0,
    n_topics: int | None = None,
    vocabulary: int = 20000,
    span_days: int = 760,
):
    """``(reviews, meta, counts)`` of an Amazon-2018-shaped catalogue of ``n_items`` items, sized for
    scale benchmarks (millions of items): ``reviews`` and ``meta`` are *iterators* of records shaped as
    :func:`generate_amazon_like`'s (reviews grouped by item, as the dumps), produced lazily so that
    memory stays with the reader; ``counts`` = ``{"items", "users", "reviews"}``.

    Reviews per item are long-tailed: ``min + Pareto(2)``-distributed with the given mean, capped
    at ``max_reviews_per_item``; user sequence lengths are ``min_user_reviews`` plus a geometric
    tail (mean ``mean_user_reviews``); each user mostly stays within one topic. Titles and
    descriptions (10-200 words, long-tailed) are drawn from a topic's share of a pseudo-word
    vocabulary, so text embeddings cluster by topic. Deterministic for the same arguments.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    rng = np.random.default_rng(seed)
    topics = n_topics or max(8, n_items // 250)
    extra = max(mean_reviews_per_item - min_reviews_per_item, 0.0)  # Pareto(a=2) has mean 1
    per_item = np.minimum(min_reviews_per_item + np.floor(rng.pareto(2.0, n_items) * extra).astype(np.int64),
                          max_reviews_per_item)
    item_topic = rng.integers(topics, size=n_items)
    # review slots ordered by (topic, random): consecutive slots -> one user, mostly one topic
    slots = np.repeat(np.arange(n_items), per_item)
    slots = slots[np.lexsort((rng.random(slots.size), item_topic[slots]))]
    p = 1.0 / max(mean_user_reviews - min_user_reviews + 1.0, 1.0)
    lengths = []
    total = 0
    while total < slots.size:
        draw = min_user_reviews + rng.geometric(p, size=max(1024, (slots.size - total) // 4)) - 1
        lengths.append(draw)
        total += int(draw.sum())
    lengths = np.concatenate(lengths)
    ends = np.cumsum(lengths)
    lengths = lengths[: int(np.searchsorted(ends, slots.size)) + 1]
    lengths[-1] -= int(lengths.sum()) - slots.size
    user_of_slot = np.repeat(np.arange(lengths.size), lengths)
    # user order within a topic block is random: rotate slots by a random shift per user start
    start_day = rng.integers(0, max(1, span_days - 3 * int(lengths.max())), size=lengths.size)
    step_days = 1 + rng.integers(0, 3, size=slots.size)
    first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    cumulative = np.cumsum(step_days)
    day = start_day[user_of_slot] + cumulative - (cumulative[first] - step_days[first])[user_of_slot]
    timestamps = START_TIME + day.astype(np.int64) * DAY
    asins = np.char.add("B", np.char.zfill(np.arange(n_items).astype(str), 9))
    users = np.char.add("A", np.char.zfill(np.arange(lengths.size).astype(str), 12))
    by_item = np.argsort(slots, kind="stable")
    counts = {"items": int(n_items), "users": int(lengths.size), "reviews": int(slots.size)}

    def reviews():
        for start in range(0, by_item.size, 65536):  # no Python int per review held at once
            for index in by_item[start : start + 65536].tolist():
                yield {"overall": 5.0, "verified": True, "reviewerID": str(users[user_of_slot[index]]),
                       "asin": str(asins[slots[index]]), "unixReviewTime": int(timestamps[index]),
                       "reviewText": "Works as described.", "summary": "Good"}

    def meta():
        meta_rng = np.random.default_rng(seed + 1)
        words = _catalogue_words(meta_rng, vocabulary)
        topic_share = max(50, vocabulary // 20)  # each topic draws most words from its own slice
        topic_offset = meta_rng.integers(0, vocabulary - topic_share + 1, size=topics)
        chunk = 4096
        for start in range(0, n_items, chunk):
            stop = min(start + chunk, n_items)
            size = stop - start
            desc_len = np.minimum(10 + np.floor(meta_rng.pareto(2.5, size) * 40).astype(np.int64), 200)
            width = 6 + int(desc_len.max())
            own = topic_offset[item_topic[start:stop], None] + meta_rng.integers(0, topic_share, size=(size, width))
            common = meta_rng.integers(0, vocabulary, size=(size, width))
            pick = np.where(meta_rng.random((size, width)) < 0.8, own, common)
            for row in range(size):
                item = start + row
                tokens = words[pick[row]]
                yield {"asin": str(asins[item]),
                       "title": " ".join(tokens[:5]).title() + f" {item % 1000}",
                       "description": [" ".join(tokens[6 : 6 + desc_len[row]]) + "."],
                       "brand": str(tokens[5]).title(),
                       "category": ["Synthetic Store", f"Topic {item_topic[item]}"]}

    return reviews(), meta(), counts
