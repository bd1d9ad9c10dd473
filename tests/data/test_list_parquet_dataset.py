"""List columns round-trip through ListParquetDataset as Python lists."""
import numpy as np
import pandas as pd

from singer_rec.datasets.parquet import ListParquetDataset


def test_list_columns_round_trip(tmp_path):
    frame = pd.DataFrame({
        "user_id": ["u1", "u2"],
        "history": [["a", "b"], []],
        "codes": [[1, 2, 3], [4, 5, 6]],
        "timestamp": np.array([1, 2], dtype=np.int64),
    })
    dataset = ListParquetDataset(filepath=str(tmp_path / "t.parquet"))
    dataset.save(frame)
    loaded = dataset.load()
    assert loaded["history"].tolist() == [["a", "b"], []]
    assert loaded["codes"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert all(type(v) is list for v in loaded["history"]) and type(loaded["codes"][0][0]) is int
    assert loaded["timestamp"].dtype == np.int64
    assert loaded["user_id"].tolist() == ["u1", "u2"]


def test_versioned_dataset_loads_the_latest_version_as_lists(tmp_path):
    from kedro.io import Version

    path = str(tmp_path / "v.parquet")
    ListParquetDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(
        pd.DataFrame({"codes": [[1, 2]]}))
    ListParquetDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(
        pd.DataFrame({"codes": [[3, 4]]}))
    loaded = ListParquetDataset(filepath=path, version=Version(None, None)).load()
    assert loaded["codes"].tolist() == [[3, 4]]
