"""The large synthetic catalogue used by benchmarks/scale (singer_rec.data.synthetic.catalogue_records)."""
from collections import Counter

import numpy as np

from singer_rec.data import sources
from singer_rec.data.synthetic import catalogue_records


def test_catalogue_records_are_deterministic_amazon_shaped_and_long_tailed():
    reviews, meta, counts = catalogue_records(3, 400)
    reviews, meta = list(reviews), list(meta)
    again_reviews, again_meta, _ = catalogue_records(3, 400)
    assert reviews == list(again_reviews) and meta == list(again_meta)
    assert counts == {"items": 400, "users": len({r["reviewerID"] for r in reviews}), "reviews": len(reviews)}
    per_item = np.array(list(Counter(r["asin"] for r in reviews).values()))
    assert per_item.size == 400 and per_item.min() >= 5 and 8 <= per_item.mean() <= 12 and per_item.max() > 20
    assert [r["asin"] for r in reviews] == sorted(r["asin"] for r in reviews)  # grouped by item, as the dumps
    # the project's ingest functions read them as Amazon 2018 records
    report = sources.IngestReport()
    interactions = sources.collect_interactions((("gen", r) for r in reviews), sources.AMAZON2018_FIELDS, report, False)
    items = sources.collect_items((("gen", m) for m in meta), sources.AMAZON2018_FIELDS, report, False)
    assert len(items) == 400 and len(interactions) >= len(reviews) - 5
    words = [len(m["description"][0].split()) for m in meta]
    assert min(words) >= 10 and max(words) <= 200
