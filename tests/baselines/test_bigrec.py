"""BIGRec grounding: an exact title grounds to exactly its item; the popularity prior breaks near-ties."""
import functools

import numpy as np
import pytest

from singer_rec.baselines.bigrec import ground_texts, grounding_scores
from singer_rec.metrics import ranks_from_scores
from singer_rec.sid.encoders import encode_texts

TITLES = ["Stainless steel fender washer kit", "Clear silicone kitchen and bath sealant", "Nitrile gloves, large, 100 pack",
          "Digital caliper 6 inch", "Safety glasses with anti-fog lens", "Stainless steel hex bolts M6"]
encode = functools.partial(encode_texts, encoder="hashing", dim=512, progress=False)


def test_an_exact_title_grounds_to_exactly_its_item():
    items = encode(TITLES)
    scores = ground_texts(TITLES[::-1], items, encode)
    assert scores.shape == (6, 6)
    assert ranks_from_scores(scores, np.arange(6)[::-1]).tolist() == [1] * 6  # every title ranks its own item first
    assert np.allclose(scores.max(axis=1), 0.0) and np.allclose(scores.min(axis=1), -1.0)  # min-max normalised


def test_popularity_prior_lifts_the_popular_item_among_equally_distant_ones():
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    generated = np.array([[0.0, 0.0]])  # equally far from all four items
    assert np.allclose(grounding_scores(generated, items), 0.0)  # a constant row normalises to zeros
    generated = np.array([[0.5, 0.0]])  # nearest item 0; items 1 and 2 tie
    popularity = np.array([0.0, 1.0, 9.0, 0.0])
    plain = grounding_scores(generated, items)
    adjusted = grounding_scores(generated, items, prior=popularity, gamma=1.0)
    assert plain[0, 1] == plain[0, 2] and adjusted[0, 2] > adjusted[0, 1]
    assert adjusted[0, 0] == 0.0 and np.argmax(adjusted[0]) == 0  # the nearest item stays first
    assert adjusted[0, 2] == pytest.approx(plain[0, 2] * (1 + 1.0) ** -1.0)  # item 2's prior normalises to 1
    with pytest.raises(ValueError, match="dim 3, items 2"):
        grounding_scores(np.zeros((1, 3)), items)
