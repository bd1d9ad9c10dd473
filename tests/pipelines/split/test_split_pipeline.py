"""split node and pipeline: shipped splits pass through row for row (MiniOneRec on ../shared),
checks against unknown items."""
import ast

import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from conftest import PROJECT_ROOT
from singer_rec.datasets.raw_files import RawFilesDataset
from singer_rec.datasets.parquet import ListParquetDataset
from singer_rec.pipelines.ingest import create_pipeline as ingest_pipeline
from singer_rec.pipelines.split import create_pipeline as split_pipeline
from singer_rec.pipelines.split.nodes import split_sequences

CSV_NAME = "{ds}_5_2016-10-2018-11.csv"


def _expected_rows(path) -> pd.DataFrame:
    """The CSV read independently of the ingest code: user, history ids, target id."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.DataFrame({
        "user_id": frame["user_id"].tolist(),
        "history": [[str(i) for i in ast.literal_eval(h)] for h in frame["history_item_id"]],
        "target": frame["item_id"].tolist(),
    })


@pytest.mark.realdata
@pytest.mark.parametrize("env,dataset", [("industrial", "Industrial_and_Scientific"), ("office", "Office_Products")])
def test_minionerec_splits_equal_the_csvs_row_for_row(shared_data, tmp_path, env, dataset):
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env,
                               runtime_params={"raw_root": str(shared_data / "minionerec")})
    params = loader["parameters"]
    raw = {k: v for k, v in loader["catalog"]["raw_files"].items() if k != "type"}
    assert (raw["source"], raw["dataset"]) == ("minionerec", dataset)
    catalog = DataCatalog({f"params:{k}": MemoryDataset(v) for k, v in params.items()})
    catalog["raw_files"] = RawFilesDataset(**raw)
    for name in ["items", "interactions", "given_sequences", "train_sequences", "valid_sequences", "test_sequences"]:
        catalog[name] = ListParquetDataset(filepath=str(tmp_path / f"{name}.parquet"))
    catalog["split_stats"] = MemoryDataset()
    SequentialRunner().run(ingest_pipeline() + split_pipeline(), catalog)

    root = shared_data / "minionerec"
    sources = {
        "train": root / "derived" / f"{dataset}.train_recovered_partial.csv",
        "valid": root / "valid" / CSV_NAME.format(ds=dataset),
        "test": root / "test" / CSV_NAME.format(ds=dataset),
    }
    counts = {}
    for split, path in sources.items():
        loaded = catalog[f"{split}_sequences"].load()  # read back from parquet
        expected = _expected_rows(path)
        assert loaded[["user_id", "history", "target"]].values.tolist() == expected.values.tolist()
        assert loaded["timestamp"].is_monotonic_increasing
        counts[split] = len(loaded)
    items = catalog["items"].load()
    assert items["item_id"].tolist() == [str(i) for i in range(len(items))]
    stats = catalog["split_stats"].load()
    assert (stats["train"], stats["valid"], stats["test"]) == (counts["train"], counts["valid"], counts["test"])
    if env == "industrial":
        assert len(items) == 3686 and (counts["valid"], counts["test"]) == (4532, 4533)
    else:
        assert len(items) == 3459 and (counts["valid"], counts["test"]) == (4866, 4866)


def _given(rows):
    return pd.DataFrame({
        "user_id": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows],
        "timestamp": np.arange(len(rows), dtype=np.int64), "split": [r[3] for r in rows],
    })


ITEMS = pd.DataFrame({"item_id": ["1", "2", "3"], "title": ["a", "b", "c"], "description": "", "brand": "", "categories": [[]] * 3})
EMPTY = pd.DataFrame({"user_id": [], "item_id": [], "timestamp": np.array([], dtype=np.int64)})


def test_given_splits_pass_through_unchanged():
    given = _given([("A1", ["1"], "2", "train"), ("A1", ["1", "2"], "3", "valid"), ("A2", ["3"], "1", "test"), ("A1", ["2"], "1", "train")])
    train, valid, test, stats = split_sequences(ITEMS, EMPTY, given, {"k_core": 5})
    assert train.values.tolist() == [["A1", ["1"], "2", 0], ["A1", ["2"], "1", 3]]
    assert valid.values.tolist() == [["A1", ["1", "2"], "3", 1]]
    assert test.values.tolist() == [["A2", ["3"], "1", 2]]
    assert stats == {"users": 2, "items": 3, "train": 2, "valid": 1, "test": 1, "interactions": 0, "protocol": "given"}


def test_unknown_items_are_named():
    given = _given([("A1", ["1", "9"], "2", "train"), ("A1", ["1"], "3", "valid"), ("A2", ["3"], "1", "test")])
    with pytest.raises(ValueError, match="given train sequences: field 'history' refers to item '9'"):
        split_sequences(ITEMS, EMPTY, given, {})
    interactions = pd.DataFrame({"user_id": ["u"], "item_id": ["7"], "timestamp": np.array([1], dtype=np.int64)})
    with pytest.raises(ValueError, match="interactions: field 'item_id' refers to item '7'"):
        split_sequences(ITEMS, interactions, _given([])[:0], {})
