"""sid stage: pipeline on an in-memory catalog, collision suffixes, errors, Industrial integration."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec.pipelines.sid.nodes import build_semantic_ids
from singer_rec.pipelines.sid.pipeline import create_pipeline
from singer_rec.sid.encoders import build_item_texts, encode_texts
from singer_rec.sid.tokens import format_sid, parse_sid

ROOT = Path(__file__).resolve().parents[3]


def _items(n):
    return pd.DataFrame({"item_id": [f"item{i:03d}" for i in range(n)], "title": [f"t{i}" for i in range(n)]})


def _check_balanced(codes, n, k, levels):
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=k)
        assert set(counts.tolist()) <= {n // k, -(-n // k)}, f"level {level} sizes {sorted(set(counts.tolist()))}"


def test_sid_pipeline_on_in_memory_catalog():
    n, k, levels = 45, 4, 3
    embeddings = np.random.default_rng(0).standard_normal((n, 6)).astype(np.float32)
    params = {"num_levels": levels, "codebook_size": k, "max_iter": 100, "tol": 1e-7}
    catalog = DataCatalog(
        {
            "items": MemoryDataset(_items(n)),
            "item_embeddings": MemoryDataset(embeddings),
            "params:sid": MemoryDataset(params),
            "params:seed": MemoryDataset(7),
            "item_sids": MemoryDataset(),
            "sid_codebooks": MemoryDataset(),
            "sid_report": MemoryDataset(),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    sids, codebooks, report = (catalog[name].load() for name in ("item_sids", "sid_codebooks", "sid_report"))
    assert list(sids.columns) == ["item_id", "sid", "codes"]
    assert sids["item_id"].tolist() == _items(n)["item_id"].tolist()
    assert sids["sid"].is_unique
    assert all(format_sid(c) == s and parse_sid(s) == c for c, s in zip(sids["codes"], sids["sid"]))
    codes = np.array([c[:levels] for c in sids["codes"]])
    _check_balanced(codes, n, k, levels)
    assert codebooks.shape == (levels, k, 6) and codebooks.dtype == np.float32
    assert report["n_items"] == n and report["codebook_size"] == k and report["seed"] == 7
    assert (report["balanced_size_min"], report["balanced_size_max"]) == (11, 12)
    assert report["collisions_after"] == 0 and report["distinct_sids"] == n
    for level in range(levels):
        figures = report["levels"][f"level_{level}"]
        assert figures["utilisation"] == 1.0 and figures["codes_used"] == k
        assert (figures["cluster_size_min"], figures["cluster_size_max"]) == (11, 12)
    errors = [report["levels"][f"level_{level}"]["quantization_error"] for level in range(levels)]
    assert errors == sorted(errors, reverse=True)
    suffixed = sum(len(c) == levels + 1 for c in sids["codes"])
    assert suffixed == report["collisions_before"]["colliding_items"]
    json.dumps(report)  # the report is JSON-serialisable as it is


def test_identical_embeddings_get_ranked_suffixes():
    # rows alternate between two points: level 1 (K=2, clusters of 4) separates the points
    point_a, point_b = np.zeros(3), np.full(3, 10.0)
    embeddings = np.array([point_a, point_b] * 4, dtype=np.float32)
    sids, _, report = build_semantic_ids(_items(8), embeddings, {"num_levels": 1, "codebook_size": 2}, seed=0)
    code_a, code_b = sids["codes"][0][0], sids["codes"][1][0]
    assert code_a != code_b
    expected = [f"<a_{code_a if row % 2 == 0 else code_b}><b_{row // 2}>" for row in range(8)]
    assert sids["sid"].tolist() == expected
    assert report["collisions_before"] == {
        "colliding_groups": 2, "colliding_items": 8, "largest_group": 4, "distinct_paths": 2,
    }
    assert report["max_suffix"] == 4 and report["collisions_after"] == 0


def test_same_seed_same_sids():
    embeddings = np.random.default_rng(3).standard_normal((60, 5)).astype(np.float32)
    params = {"num_levels": 2, "codebook_size": 5}
    first = build_semantic_ids(_items(60), embeddings, params, seed=1)
    second = build_semantic_ids(_items(60), embeddings, params, seed=1)
    pd.testing.assert_frame_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_bad_inputs_are_named():
    embeddings = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"sid\.codebook_size \(8\) must be <= the number of items \(5\)"):
        build_semantic_ids(_items(5), embeddings, {"codebook_size": 8}, seed=0)
    with pytest.raises(ValueError, match="item_embeddings has 5 rows but items has 6"):
        build_semantic_ids(_items(6), embeddings, {"codebook_size": 2}, seed=0)
    duplicated = _items(5).assign(item_id=["a", "b", "c", "b", "e"])
    with pytest.raises(ValueError, match=r"not unique, e.g. 'b' \(row 3\)"):
        build_semantic_ids(duplicated, embeddings, {"codebook_size": 2}, seed=0)


def test_env_confs_set_k_within_catalog_sizes():
    from singer_rec.settings import project_parameters

    base, gift, industrial = (project_parameters(ROOT / "conf", env)["sid"] for env in ("local", "giftcards", "industrial"))
    assert (base["num_levels"], base["codebook_size"]) == (3, 16)
    assert (gift["num_levels"], gift["codebook_size"]) == (3, 8)  # 148 Gift_Cards items
    assert (industrial["num_levels"], industrial["codebook_size"]) == (3, 256)  # the paper's setting


@pytest.mark.realdata
def test_industrial_items_get_distinct_balanced_sids(shared_data):
    """3,686 Industrial items, 3 x 256: distinct SIDs, every level 14 or 15 items per code.

    Uses the cheap hashing encoder (MiniLM over 3,686 items takes minutes on 2 cores)."""
    raw = json.loads((shared_data / "minionerec/index/Industrial_and_Scientific.item.json").read_text())
    items = pd.DataFrame([{"item_id": key, **value} for key, value in raw.items()])
    embeddings = encode_texts(build_item_texts(items, ["title", "description"]), "hashing", dim=64)
    from singer_rec.settings import project_parameters

    params = project_parameters(ROOT / "conf", "industrial")["sid"]
    sids, codebooks, report = build_semantic_ids(items, embeddings, params, seed=42)
    assert len(sids) == 3686 and sids["sid"].is_unique
    codes = np.array([c[:3] for c in sids["codes"]])
    _check_balanced(codes, 3686, 256, 3)
    assert codebooks.shape == (3, 256, 64)
    for level in range(3):
        figures = report["levels"][f"level_{level}"]
        assert (figures["cluster_size_min"], figures["cluster_size_max"]) == (14, 15)
        assert figures["utilisation"] == 1.0


def test_embed_and_sid_through_the_real_catalog_datasets(tmp_path):
    """catalog_sid.yml's datasets (versioned npy, list parquet, json), files under tmp_path."""
    from singer_rec.pipelines.embed.pipeline import create_pipeline as embed_pipeline

    entries = yaml.safe_load((ROOT / "conf/base/catalog_sid.yml").read_text())
    for entry in entries.values():
        entry["filepath"] = str(tmp_path / entry["filepath"].replace("${globals:data_root}/", ""))
    catalog = DataCatalog.from_config(entries)
    items = _items(20).assign(description=[f"item number {i % 7}" for i in range(20)])
    catalog["items"] = MemoryDataset(items)
    catalog["params:embed"] = MemoryDataset({"encoder": "hashing", "dim": 8})
    catalog["params:sid"] = MemoryDataset({"num_levels": 2, "codebook_size": 4})
    catalog["params:seed"] = MemoryDataset(0)
    SequentialRunner().run(embed_pipeline() + create_pipeline(), catalog)
    embeddings = catalog["item_embeddings"].load()
    assert embeddings.shape == (20, 8) and embeddings.dtype == np.float32
    sids = catalog["item_sids"].load()
    expected, codebooks, report = build_semantic_ids(items, embeddings, {"num_levels": 2, "codebook_size": 4}, 0)
    pd.testing.assert_frame_equal(sids, expected)  # codes come back as Python lists
    np.testing.assert_array_equal(catalog["sid_codebooks"].load(), codebooks)
    assert catalog["sid_report"].load() == json.loads(json.dumps(report))
    assert (tmp_path / "04_feature/item_embeddings.npy").is_dir()  # versioned: one folder per run
