"""`kedro run --config=<file> --params=...`: the command line's parameters merge over the file's."""
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from singer_rec import cli as project_cli

CONFIG = """run:
  pipeline: sft
  params:
    seed: 42
    sft:
      train: {learning_rate: 0.001, epochs: 6}
"""


@pytest.fixture
def seen(monkeypatch):
    calls: dict = {}
    monkeypatch.setattr(project_cli, "kedro_run", SimpleNamespace(callback=lambda **kwargs: calls.update(kwargs)))
    return calls


def invoke(args):
    result = CliRunner().invoke(project_cli.cli, ["run", *args])
    assert result.exit_code == 0, result.output
    return result


def test_params_merge_key_by_key_over_the_config_file(tmp_path, seen):
    config = tmp_path / "budget.yml"
    config.write_text(CONFIG)
    invoke(["--config", str(config), "--params", "seed=43,sft.train.epochs=8"])
    assert seen["params"] == {"seed": 43, "sft": {"train": {"learning_rate": 0.001, "epochs": 8}}}
    assert seen["pipeline"] == "sft"


def test_config_file_alone_and_params_alone_are_kedros(tmp_path, seen):
    config = tmp_path / "budget.yml"
    config.write_text(CONFIG)
    invoke(["--config", str(config)])
    assert seen["params"] == {"seed": 42, "sft": {"train": {"learning_rate": 0.001, "epochs": 6}}}
    invoke(["--params", "sft.train.epochs=2"])
    assert seen["params"] == {"sft": {"train": {"epochs": 2}}}


def test_merge_params_replaces_leaves_and_keeps_siblings():
    merged = project_cli.merge_params({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}, {"a": {"c": {"d": 3}}, "e": [2], "f": 4})
    assert merged == {"a": {"b": 1, "c": {"d": 3}}, "e": [2], "f": 4}
