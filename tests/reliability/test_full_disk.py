"""A full disk (ENOSPC raised at the write, after part of the bytes went out) leaves nothing that a
later stage would load: no partial model folder, checkpoint, parquet or array version. The
previous version stays the one that loads, and the error says what failed and where."""
from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, DatasetError

from singer_rec.recommend import resolve_model_folder
from singer_rec.training import common

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from decoding.tiny_folder import build_tiny_folder  # noqa: E402

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def leftovers(root: Path) -> list[str]:
    """Hidden temporary files/folders anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def half_written(write):
    """Wrap a writer ``write(data, path, ...)``: it writes a few bytes to ``path``, then the disk is full."""
    def full(*args, **kwargs):
        path = next(a for a in args if isinstance(a, (str, Path)) or hasattr(a, "write"))
        if hasattr(path, "write"):
            path.write(b"PAR1 partial")
        else:
            Path(path).write_bytes(b"partial")
        raise ENOSPC
    return full


def versioned_catalog(entry: dict) -> DataCatalog:
    return DataCatalog.from_config({"data": {**entry, "versioned": True}})


def versions(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
# model folder
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["copy", "move across filesystems"])
def test_model_folder_save_on_a_full_disk_keeps_the_previous_version(tmp_path, monkeypatch, how):
    target = tmp_path / "06_models" / "sft_model"
    entry = {"type": "singer_rec.datasets.model_folder.ModelFolderDataset", "filepath": str(target),
             "move": how != "copy"}
    first = build_tiny_folder(tmp_path / "work" / "run1" / "model")
    versioned_catalog(entry).save("data", str(first))
    [v1] = versions(target)

    second = build_tiny_folder(tmp_path / "work" / "run2" / "model")
    written = []
    real_copy = shutil.copyfile

    def copy_until_full(src, dst, **kwargs):
        if written:  # the first file goes out whole, the second only in part
            Path(dst).write_bytes(b"partial")
            raise ENOSPC
        written.append(src)
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_full)  # copytree's copy2 writes through it
    if how != "copy":
        def other_filesystem(src, dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr("os.rename", other_filesystem)
    with pytest.raises(DatasetError) as info:
        versioned_catalog(entry).save("data", str(second))
    monkeypatch.undo()

    message = str(info.value)
    assert f"saving the model folder {second} to {target}/" in message
    assert "[Errno 28] No space left on device" in message and f"{second} is unchanged" in message
    assert versions(target) == [v1]  # no second version folder, not even an empty one
    assert leftovers(target) == []
    assert versioned_catalog(entry).load("data") == target / v1 / "sft_model"
    assert resolve_model_folder(target) == target / v1 / "sft_model"
    assert (second / "singer.json").is_file()  # the finished folder is still there for a retry


def test_training_process_model_folder_write_on_a_full_disk_keeps_the_old_folder(tmp_path, monkeypatch):
    """``modeling.save_model_folder`` (the trainers' final write): the old folder stays whole."""
    from singer_rec import modeling

    folder = build_tiny_folder(tmp_path / "run" / "model")
    before = (folder / "model.safetensors").read_bytes()
    real_write_text = Path.write_text

    def full_at_meta(self, text, *args, **kwargs):
        if self.name == modeling.META_FILE:  # the last file of a folder: weights and tokenizer went out
            real_write_text(self, text[:10], *args, **kwargs)
            raise ENOSPC
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_at_meta)
    with pytest.raises(OSError, match="No space left on device") as info:
        build_tiny_folder(folder)
    monkeypatch.undo()
    assert info.value.__notes__ == [f"while writing the model folder {folder}: nothing of it was kept; "
                                    "a folder already there is untouched"]
    assert leftovers(folder.parent) == []
    assert (folder / "model.safetensors").read_bytes() == before
    modeling.load_model_folder(folder)


# ---------------------------------------------------------------------------------------------
# checkpoints (shared by the SFT and RL trainers)
# ---------------------------------------------------------------------------------------------
def _trainer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer, scheduler = common.optimizer_and_schedule(model, lr=0.1, weight_decay=0.0, total_steps=10)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    import safetensors.torch

    model, optimizer, scheduler = _trainer()
    first = common.save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {"epoch": 0})
    saved_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(safetensors.torch, "save_file", half_written(safetensors.torch.save_file))
    with pytest.raises(OSError) as info:
        common.save_checkpoint(tmp_path, 10, model, optimizer, scheduler, {"epoch": 1})
    monkeypatch.undo()

    assert info.value.errno == errno.ENOSPC
    assert f"while writing the checkpoint {tmp_path / 'step-00000010'}" in "\n".join(info.value.__notes__)
    assert leftovers(tmp_path) == [] and common.list_checkpoints(tmp_path) == [first]
    assert common.latest_checkpoint(tmp_path) == first
    fresh, fresh_opt, fresh_sched = _trainer()
    assert common.load_checkpoint(first, fresh, fresh_opt, fresh_sched) == {"step": 5, "trainer": {"epoch": 0}}
    assert torch.equal(fresh.weight, saved_weight)


# ---------------------------------------------------------------------------------------------
# dataset versions: parquet tables and numpy arrays
# ---------------------------------------------------------------------------------------------
def test_parquet_version_on_a_full_disk_keeps_the_previous_version(tmp_path, monkeypatch):
    folder = tmp_path / "train_sequences.parquet"
    entry = {"type": "singer_rec.datasets.parquet.ListParquetDataset", "filepath": str(folder)}
    old = pd.DataFrame({"user_id": ["u1"], "history": [["a", "b"]]})
    versioned_catalog(entry).save("data", old)
    [v1] = versions(folder)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_written(pd.DataFrame.to_parquet))
    with pytest.raises(DatasetError, match=r"writing the parquet file .*train_sequences\.parquet/[^/]+/"
                                           r"train_sequences\.parquet failed: \[Errno 28\] No space left"):
        versioned_catalog(entry).save("data", pd.DataFrame({"user_id": ["u2"], "history": [["c"]]}))
    monkeypatch.undo()
    assert versions(folder) == [v1] and leftovers(folder) == []
    assert versioned_catalog(entry).load("data").to_dict("list") == {"user_id": ["u1"], "history": [["a", "b"]]}


def test_unversioned_parquet_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "items.parquet"
    catalog = DataCatalog.from_config({"items": {"type": "singer_rec.datasets.parquet.ListParquetDataset",
                                                 "filepath": str(path)}})
    catalog.save("items", pd.DataFrame({"item_id": ["i1"]}))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_written(pd.DataFrame.to_parquet))
    with pytest.raises(DatasetError, match="No space left on device"):
        catalog.save("items", pd.DataFrame({"item_id": ["i2"]}))
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    assert catalog.load("items")["item_id"].tolist() == ["i1"]


def test_array_version_on_a_full_disk_keeps_the_previous_version(tmp_path, monkeypatch):
    folder = tmp_path / "item_embeddings.npy"
    entry = {"type": "singer_rec.datasets.numpy_dataset.NumpyDataset", "filepath": str(folder), "dtype": "float32"}
    versioned_catalog(entry).save("data", np.ones((2, 3)))
    [v1] = versions(folder)
    monkeypatch.setattr(np, "save", half_written(np.save))
    with pytest.raises(DatasetError, match=r"writing the array file .*item_embeddings\.npy failed: \[Errno 28\]"):
        versioned_catalog(entry).save("data", np.zeros((2, 3)))
    monkeypatch.undo()
    assert versions(folder) == [v1] and leftovers(folder) == []
    assert versioned_catalog(entry).load("data").tolist() == [[1.0] * 3] * 2
