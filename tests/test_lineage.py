"""Lineage of the registered pipelines: every input comes from a raw dataset, a parameter or a node,
and no catalog entry reads another entry's file under a new name."""
import os
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.startup import bootstrap_project

from conftest import PROJECT_ROOT
from singer_rec.settings import CONFIG_LOADER_ARGS

ENVS = ["local", "giftcards", "industrial", "office"]
STUDIED = ["__default__", "baselines", "report", "ablations", "llm_baselines", "sdpo"]
RAW_TYPE = "singer_rec.datasets.raw_files.RawFilesDataset"
# The one exception to "one file, one name": catalog_update reads the model folders as optional inputs
# and writes new versions of the catalogue and model files under names of its own (a node cannot read
# and write one name). Each alias -> the entry whose file it uses.
CATALOG_UPDATE_ALIASES = {
    "catalog_update_sft_model_in": "sft_model", "catalog_update_rl_model_in": "rl_model",
    "catalog_update_updated_sft_model": "sft_model", "catalog_update_updated_rl_model": "rl_model",
    "catalog_update_updated_items": "items", "catalog_update_updated_item_sids": "item_sids",
    "catalog_update_updated_item_embeddings": "item_embeddings",
}


@pytest.fixture(scope="module")
def pipelines():
    cwd = os.getcwd()
    os.chdir(PROJECT_ROOT)  # the ablation variants are read from the project's conf/
    try:
        bootstrap_project(PROJECT_ROOT)
        from singer_rec.pipeline_registry import register_pipelines

        return register_pipelines()
    finally:
        os.chdir(cwd)


def _catalog(env: str) -> dict:
    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)["catalog"]


def _raw_datasets(env: str) -> set[str]:
    return {name for name, entry in _catalog(env).items() if isinstance(entry, dict) and entry.get("type") == RAW_TYPE}


def _free_data_inputs(pipeline) -> set[str]:
    return {name for name in pipeline.inputs() if not name.startswith("params:")}


@pytest.mark.parametrize("env", ENVS)
def test_the_default_run_starts_at_raw_datasets_only(pipelines, env):
    assert _free_data_inputs(pipelines["__default__"]) == _raw_datasets(env) == {"raw_files"}


@pytest.mark.parametrize("name", STUDIED)
def test_every_free_input_is_raw_a_parameter_or_a_registered_output(pipelines, name):
    """baselines, llm_baselines, sdpo, report and ablations read what other pipelines write; nothing comes from nowhere."""
    produced = set().union(*(p.all_outputs() for p in pipelines.values()))
    raw = _raw_datasets("local")
    orphans = _free_data_inputs(pipelines[name]) - produced - raw
    assert not orphans, f"{name}: inputs no registered pipeline writes and no raw dataset: {sorted(orphans)}"


def test_the_studied_pipelines_together_start_at_raw_datasets_only(pipelines):
    union = sum((pipelines[name] for name in STUDIED[1:]), pipelines["__default__"])
    assert _free_data_inputs(union) == {"raw_files"}


def test_the_report_consumes_the_producing_datasets(pipelines):
    report_inputs = _free_data_inputs(pipelines["report"])
    assert report_inputs == {"baseline_metrics", "sft.test_metrics", "rl.test_metrics", "llm_baseline_metrics",
                             "sdpo_metrics", "minionerec.test_metrics"}
    producers = ("baselines", "evaluate", "llm_baselines", "sdpo", "ablations")
    assert report_inputs <= set().union(*(pipelines[name].all_outputs() for name in producers))


def test_llm_baselines_start_from_the_splits_the_sids_and_parameters_only(pipelines):
    """Its only data inputs are other stages' outputs; it is not in the default run."""
    assert _free_data_inputs(pipelines["llm_baselines"]) == {"items", "item_sids", "train_sequences",
                                                             "valid_sequences", "test_sequences"}
    assert not pipelines["llm_baselines"].all_outputs() & pipelines["__default__"].all_outputs()


def _filepaths(entry: dict) -> list[str]:
    paths = [entry["filepath"]] if "filepath" in entry else []
    if isinstance(entry.get("dataset"), dict):
        paths += _filepaths(entry["dataset"])
    return paths


@pytest.mark.parametrize("env", ENVS)
def test_no_catalog_entry_aliases_another_entrys_file(env):
    owners: dict[str, str] = {}
    for name, entry in _catalog(env).items():
        if not isinstance(entry, dict) or name in CATALOG_UPDATE_ALIASES:
            continue
        for path in _filepaths(entry):
            normalised = str(Path(path))
            assert normalised not in owners, f"{name} and {owners[normalised]} both read {normalised}"
            owners[normalised] = name


def _dataset_path(dataset) -> str | None:
    inner = getattr(dataset, "_dataset", None)  # an OptionalDataset's file
    path = getattr(dataset, "_filepath", None) or getattr(inner, "_filepath", None)
    return None if path is None else str(path)


@pytest.mark.parametrize("env", ENVS)
def test_every_dataset_of_every_pipeline_has_a_file_of_its_own(pipelines, env):
    """Factory patterns resolved for the names the pipelines use: one file, one name."""
    from kedro.io import DataCatalog

    catalog = DataCatalog.from_config(_catalog(env))
    names = set().union(*(p.datasets() for p in pipelines.values()))
    owners: dict[str, str] = {}
    for name in sorted(n for n in names if not n.startswith("params:") and n != "parameters"
                       and n not in CATALOG_UPDATE_ALIASES):
        dataset = catalog.get(name)
        path = None if dataset is None else _dataset_path(dataset)
        if path is None:
            continue  # an in-memory intermediate (a variant's parameters, filtered rows)
        assert path not in owners, f"{name} and {owners[path]} both use {path}"
        owners[path] = name
    assert len(owners) > 60  # the stages' files, every ablation variant's included
    for alias, owner in CATALOG_UPDATE_ALIASES.items():  # an alias uses exactly its owner's file
        assert _dataset_path(catalog.get(alias)) == _dataset_path(catalog.get(owner)), alias
