"""ModelFolderDataset: versioned, atomic save of a finished model folder; load returns its path."""
from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError, Version

from singer_rec.datasets.model_folder import ModelFolderDataset


def _finished_folder(root: Path, name: str, marker: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "singer.json").write_text('{"preset": "scratch", "sid_map": {}}')
    (folder / "model.safetensors").write_text(marker)
    return folder


def test_versioned_save_moves_the_folder_and_load_returns_the_latest(tmp_path):
    ds = ModelFolderDataset(filepath=str(tmp_path / "models" / "sft_model"), version=Version(None, None))
    assert not ds.exists()
    first = _finished_folder(tmp_path / "work", "out1", "first")
    ds.save(str(first))
    assert not first.exists()  # moved, not copied
    loaded = ds.load()
    assert loaded.name == "sft_model" and loaded.parent.parent == tmp_path / "models" / "sft_model"
    assert (loaded / "model.safetensors").read_text() == "first"
    assert ds.exists()

    ds2 = ModelFolderDataset(filepath=str(tmp_path / "models" / "sft_model"), version=Version(None, None))
    ds2.save(_finished_folder(tmp_path / "work", "out2", "second"))
    assert (ds2.load() / "model.safetensors").read_text() == "second"
    versions = sorted((tmp_path / "models" / "sft_model").iterdir())
    assert len(versions) == 2
    # nothing but the finished folder inside a version
    assert [p.name for p in versions[0].iterdir()] == ["sft_model"]


def test_copy_mode_keeps_the_source_and_unversioned_path_is_fixed(tmp_path):
    ds = ModelFolderDataset(filepath=str(tmp_path / "m"), move=False)
    src = _finished_folder(tmp_path, "src", "x")
    ds.save(src)
    assert src.exists() and ds.load() == tmp_path / "m"
    ds.save(_finished_folder(tmp_path, "src2", "y"))  # replaces the old folder whole
    assert (ds.load() / "model.safetensors").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "src", "src2"]


def test_unfinished_folder_is_refused_and_leaves_nothing(tmp_path):
    ds = ModelFolderDataset(filepath=str(tmp_path / "models" / "sft_model"), version=Version(None, None))
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.safetensors").write_text("partial")
    with pytest.raises(DatasetError, match="not a finished model folder"):
        ds.save(half)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("singer.json"))
    with pytest.raises(DatasetError):
        ds.load()


def test_catalog_config_builds_the_dataset(tmp_path):
    catalog = DataCatalog.from_config({"sft_model": {
        "type": "singer_rec.datasets.model_folder.ModelFolderDataset",
        "filepath": str(tmp_path / "sft_model"), "versioned": True}})
    catalog.save("sft_model", _finished_folder(tmp_path, "out", "z"))
    assert (catalog.load("sft_model") / "model.safetensors").read_text() == "z"
