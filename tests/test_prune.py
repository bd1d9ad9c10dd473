"""``kedro prune``: old versions of versioned outputs go, the newest ``--keep`` and everything else stay."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from kedro.io.core import Version

from singer_rec.cli import cli
from singer_rec.datasets.parquet import ListParquetDataset
from singer_rec.prune import prune_versions
from singer_rec.settings import project_config

CONF = Path(__file__).resolve().parents[1] / "conf"
VERSIONS = ["2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", "2026-01-03T00.00.00.000Z"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The project's conf with data_root in tmp_path; three saved versions of item_sids and of one
    ablation variant's rl_model (a dataset factory entry), plus a folder that is not a version."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    globals_file = conf / "base" / "globals.yml"
    globals_file.write_text(globals_file.read_text().replace("data_root: data/demo", "data_root: out"))
    monkeypatch.chdir(tmp_path)
    for i, version in enumerate(VERSIONS):
        dataset = ListParquetDataset(filepath="out/04_feature/item_sids.parquet", version=Version(None, version))
        dataset.save(pd.DataFrame({"item_id": ["a"], "codes": [[i, 0, 0]]}))
        model = tmp_path / "out/06_models/ablations/grpo-acc/rl_model" / version / "rl_model"
        model.mkdir(parents=True)
        (model / "meta.json").write_text("{}")
    (tmp_path / "out/04_feature/item_sids.parquet/notes").mkdir()
    return tmp_path


def test_prune_keeps_the_newest_versions_and_the_load_still_returns_the_newest(project):
    catalog = project_config("conf", "base", "catalog")
    dry = prune_versions(catalog, keep=2, project_root=".", dry_run=True)
    assert sorted((entry.dataset, [p.name for p in stale]) for entry, stale, _ in dry) == [
        ("item_sids", [VERSIONS[0]]),
        ("{variant}.rl_model (out/06_models/ablations/grpo-acc/rl_model)", [VERSIONS[0]]),
    ]
    assert all(size > 0 for *_, size in dry)
    assert len(list(Path("out/04_feature/item_sids.parquet").iterdir())) == 4  # dry run: nothing deleted

    prune_versions(catalog, keep=1, project_root=".")
    assert sorted(p.name for p in Path("out/04_feature/item_sids.parquet").iterdir()) == [VERSIONS[2], "notes"]
    assert [p.name for p in Path("out/06_models/ablations/grpo-acc/rl_model").iterdir()] == [VERSIONS[2]]
    loaded = ListParquetDataset(filepath="out/04_feature/item_sids.parquet", version=Version(None, None)).load()
    assert loaded["codes"].tolist() == [[2, 0, 0]]


def test_prune_command_dry_run_then_delete(project):
    runner = CliRunner()
    dry = runner.invoke(cli, ["prune", "--env", "base", "--keep", "2", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "item_sids: 3 version(s), would delete 1" in dry.output
    assert "would be freed" in dry.output
    assert len(list(Path("out/04_feature/item_sids.parquet").iterdir())) == 4

    done = runner.invoke(cli, ["prune", "--env", "base", "--keep", "2"])
    assert done.exit_code == 0, done.output
    assert "item_sids: 3 version(s), deleted 1" in done.output
    assert sorted(p.name for p in Path("out/04_feature/item_sids.parquet").iterdir()) == [*VERSIONS[1:], "notes"]


def test_prune_refuses_keep_zero(project):
    result = CliRunner().invoke(cli, ["prune", "--env", "base", "--keep", "0"])
    assert result.exit_code == 2 and "must be >= 1" in result.output
    with pytest.raises(ValueError, match="keep must be an integer >= 1"):
        prune_versions(project_config("conf", "base", "catalog"), keep=0)
    assert len(list(Path("out/04_feature/item_sids.parquet").iterdir())) == 4
