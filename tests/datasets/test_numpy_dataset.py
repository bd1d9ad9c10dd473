"""NumpyDataset: exact round trip, versioning, dtype checks, no pickle."""
import numpy as np
import pytest
from kedro.io import DatasetError, Version

from singer_rec.datasets.numpy_dataset import NumpyDataset


def test_round_trip_exact(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    ds = NumpyDataset(filepath=str(tmp_path / "a.npy"), dtype="float32")
    assert not ds.exists()
    ds.save(data)
    loaded = ds.load()
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, data)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]  # no temp file left


def test_save_casts_and_load_checks_dtype(tmp_path):
    NumpyDataset(filepath=str(tmp_path / "b.npy"), dtype="float32").save(np.ones((2, 2)))
    assert np.load(tmp_path / "b.npy").dtype == np.float32
    with pytest.raises(DatasetError, match="dtype is float32, expected float64"):
        NumpyDataset(filepath=str(tmp_path / "b.npy"), dtype="float64").load()


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="no pickle"):
        NumpyDataset(filepath=str(tmp_path / "c.npy")).save(np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "d.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="not a plain numeric"):
        NumpyDataset(filepath=str(tmp_path / "d.npy")).load()


def test_versioned_saves_keep_history_and_load_latest(tmp_path):
    path = str(tmp_path / "v.npy")
    NumpyDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(np.zeros(3))
    NumpyDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(np.ones(3))
    np.testing.assert_array_equal(NumpyDataset(filepath=path, version=Version(None, None)).load(), np.ones(3))
    old = NumpyDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    np.testing.assert_array_equal(old, np.zeros(3))
    assert len(list((tmp_path / "v.npy").iterdir())) == 2
