"""ingest + split as Kedro pipelines: the synthetic demo on an in-memory catalog, the real
Gift_Cards dumps from ../shared, and no partial output after bad input."""
import gzip
import json
import math

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from conftest import PROJECT_ROOT
from singer_rec.datasets.raw_files import RawFilesDataset
from singer_rec.data.sources import DataFormatError
from singer_rec.datasets.parquet import ListParquetDataset
from singer_rec.pipelines.ingest import create_pipeline as ingest_pipeline
from singer_rec.pipelines.split import create_pipeline as split_pipeline

OUTPUTS = ["train_sequences", "valid_sequences", "test_sequences", "split_stats"]


def _loader(env: str, runtime_params: dict | None = None) -> OmegaConfigLoader:
    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env,
                             runtime_params=runtime_params, merge_strategy={"parameters": "soft"})


def _parameters(env: str) -> dict:
    return _loader(env)["parameters"]


def _raw(source: str, root=".", dataset: str = "") -> RawFilesDataset:
    return RawFilesDataset(source=source, root=str(root), dataset=dataset)


def _catalog(params: dict, raw: RawFilesDataset | None = None, **overrides) -> DataCatalog:
    catalog = DataCatalog({f"params:{name}": MemoryDataset(value) for name, value in params.items()})
    catalog["raw_files"] = raw or _raw("synthetic")
    for name in ["items", "interactions", "given_sequences", *OUTPUTS]:
        catalog[name] = overrides.get(name, MemoryDataset(copy_mode="assign"))
    return catalog


def _run(catalog: DataCatalog) -> dict:
    """ingest, then split (two runs: a runner releases in-memory intermediates it no longer needs)."""
    SequentialRunner().run(ingest_pipeline(), catalog)
    ingested = {name: catalog[name].load() for name in ["items", "interactions"]}
    SequentialRunner().run(split_pipeline(), catalog)
    return {**ingested, **{name: catalog[name].load() for name in OUTPUTS}}


def _check_sequences(out: dict, ratios=(0.8, 0.1, 0.1)) -> None:
    train, valid, test = out["train_sequences"], out["valid_sequences"], out["test_sequences"]
    n = len(train) + len(valid) + len(test)
    assert len(train) == math.floor(n * ratios[0] + 1e-9)
    assert len(train) + len(valid) == math.floor(n * (ratios[0] + ratios[1]) + 1e-9)
    assert train["timestamp"].max() <= valid["timestamp"].min()
    assert valid["timestamp"].max() <= test["timestamp"].min()
    known = set(out["items"]["item_id"])
    for table in (train, valid, test):
        assert list(table.columns) == ["user_id", "history", "target", "timestamp"]
        assert all(isinstance(h, list) and 1 <= len(h) <= 10 for h in table["history"])
        assert set(table["target"]) <= known
    stats = out["split_stats"]
    assert (stats["train"], stats["valid"], stats["test"]) == (len(train), len(valid), len(test))
    # every kept interaction but each user's first becomes exactly one row
    assert n == stats["interactions"] - stats["users"]


def test_synthetic_demo_through_both_pipelines(tmp_path):
    params = _parameters("base")
    assert _loader("base")["catalog"]["raw_files"]["source"] == "synthetic"
    # the sequences go through parquet to prove the list column round-trips in the catalog
    files = {name: ListParquetDataset(filepath=str(tmp_path / f"{name}.parquet")) for name in OUTPUTS[:3]}
    out = _run(_catalog(params, **files))
    _check_sequences(out)
    stats = out["split_stats"]
    assert stats["users"] == 400 and 230 <= stats["items"] <= 240
    assert stats["protocol"] == "chronological"
    # same seed, same result
    again = _run(_catalog(params))
    for name in OUTPUTS[:3]:
        pd.testing.assert_frame_equal(out[name], again[name])
    assert again["split_stats"] == stats


def test_leave_last_out_option_on_the_demo():
    params = _parameters("base")
    params["split"] = {**params["split"], "protocol": "leave_last_out"}
    out = _run(_catalog(params))
    users = out["split_stats"]["users"]
    assert len(out["test_sequences"]) == users and len(out["valid_sequences"]) == users
    assert out["test_sequences"]["user_id"].is_unique


@pytest.mark.realdata
def test_gift_cards_raw_dumps(shared_data):
    params = _parameters("giftcards")
    # the environment's raw_files entry, its root from a runtime raw_root
    entry = _loader("giftcards", {"raw_root": str(shared_data / "raw")})["catalog"]["raw_files"]
    assert (entry["source"], entry["dataset"], entry["root"]) == ("amazon2018", "Gift_Cards", str(shared_data / "raw"))
    raw = RawFilesDataset(**{k: v for k, v in entry.items() if k != "type"})
    assert {k: p.name for k, p in raw.load().files.items()} == {
        "reviews": "Gift_Cards_5.json.gz", "meta": "meta_Gift_Cards.json.gz"}
    out = _run(_catalog(params, raw))
    # the 5-core file has 2,972 reviews of 458 users and 148 items; 3 are exact duplicates
    assert len(out["items"]) == 148 and len(out["interactions"]) == 2969
    assert out["interactions"]["user_id"].nunique() == 458
    assert not out["items"]["title"].str.contains("&amp;|&#39;|<").any()
    _check_sequences(out)
    # without the duplicates 4 users and 1 item fall under 5 interactions
    assert out["split_stats"] == {
        "users": 454, "items": 147, "train": 1996, "valid": 249, "test": 250,
        "interactions": 2949, "protocol": "chronological",
    }


def test_bad_input_leaves_no_output(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [json.dumps({"reviewerID": f"u{n % 5}", "asin": f"i{n % 7}", "unixReviewTime": n}) for n in range(40)]
    lines[30] = lines[30][:-5]
    with gzip.open(raw / "Cat_5.json.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with gzip.open(raw / "meta_Cat.json.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps({"asin": f"i{n}", "title": f"T{n}"}) for n in range(7)) + "\n")
    params = _parameters("base")
    params["ingest"] = {"skip_bad_lines": False}
    out_dir = tmp_path / "out"
    files = {name: ListParquetDataset(filepath=str(out_dir / f"{name}.parquet")) for name in ["items", "interactions", "given_sequences"]}
    with pytest.raises(DataFormatError, match=r"Cat_5\.json\.gz:31: malformed line"):
        _run(_catalog(params, _raw("amazon2018", raw, "Cat"), **files))
    assert not out_dir.exists()
    # asking to skip bad lines runs through and reports the surviving 39 reviews
    params["ingest"]["skip_bad_lines"] = True
    out = _run(_catalog(params, _raw("amazon2018", raw, "Cat"), **files))
    assert len(out["interactions"]) == 39
    assert (out_dir / "interactions.parquet").is_file()
