"""The llm_baselines pipeline with the real runner, the project's catalog entries and the training process."""
import json
import sys
from pathlib import Path

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

PROJECT_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(PROJECT_ROOT / "tests" / "baselines"))
from title_world import TINY_MODEL, title_world  # noqa: E402

from singer_rec.pipelines.baselines.nodes import METRIC_COLUMNS  # noqa: E402
from singer_rec.pipelines.llm_baselines import create_pipeline  # noqa: E402
from singer_rec.pipelines.llm_baselines.nodes import LLMBaselinesParams  # noqa: E402
from singer_rec.params import from_params  # noqa: E402

SFT = {"model": TINY_MODEL, "num_processes": 1, "work_dir": "unused", "train": {
    "learning_rate": 3e-3, "batch_size": 64, "micro_batch_size": 64, "epochs": 1, "patience": 1, "max_length": 96,
    "select_metric": "NDCG@10", "autocast": "off", "device": "cpu", "num_threads": 1}}
BASELINES = {"max_history": 4, "training": {"loss": "ce", "batch_size": 64, "max_epochs": 1, "patience": 1,
                                            "learning_rates": [1e-2], "weight_decays": [1e-6]},
             "sasrec": {"model": {"dim": 16}}}
EMBED = {"encoder": "hashing", "dim": 512}


def _catalog(tmp_path) -> DataCatalog:
    """The project's llm_baselines catalog entries (paths moved under tmp_path) + in-memory inputs."""
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog_llm_baselines.yml").read_text())

    def move(entry):  # an optional entry holds its file in its inner dataset
        if "dataset" in entry:
            return {**entry, "dataset": move(entry["dataset"])}
        return {**entry, "filepath": str(tmp_path / entry["filepath"].replace("${globals:data_root}/", ""))}

    catalog = DataCatalog.from_config({name: move(entry) for name, entry in conf.items()})
    items, item_sids, train, valid, test = title_world(num_users=40)
    # the llm_baselines block: the project's conf with the run folder moved and the assistant's weight chosen on valid
    params = {**yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_llm_baselines.yml").read_text())["llm_baselines"],
              "work_dir": str(tmp_path / "bigrec_work"), "alphas": [0.5, 0.0, 2.0], "valid_rows": 25,
              "max_new_tokens": 12}
    params["train"] = {**params["train"], "epochs": 1}
    for name, value in {"items": items, "item_sids": item_sids, "train_sequences": train, "valid_sequences": valid,
                        "test_sequences": test, "params:prompts": {"history_length": 2}, "params:llm_baselines": params,
                        "params:sft": SFT, "params:embed": EMBED, "params:baselines": BASELINES,
                        "params:seed": 3}.items():
        catalog[name] = MemoryDataset(value, copy_mode="assign")
    return catalog


def test_pipeline_trains_the_title_model_and_writes_one_entry_per_method(tmp_path):
    catalog = _catalog(tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)
    written = json.loads((tmp_path / "07_model_output" / "llm_baseline_metrics.json").read_text())
    assert list(written) == ["BIGRec", "BIGRec (title-constrained)", "D3"]
    for method, metrics in written.items():
        assert set(METRIC_COLUMNS) | {"n", "wall_time_s"} <= set(metrics), method
        assert metrics["n"] == 40 and metrics["wall_time_s"] >= metrics["train_s"] > 0, method
        assert 0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1, method
    d3 = written["D3"]
    assert d3["assistant_s"] > 0 and d3["alpha_select_s"] > 0  # the SASRec assistant was trained, alpha chosen
    by_alpha = d3["valid_NDCG@10_by_alpha"]
    assert list(by_alpha) == ["0.0", "0.5", "2.0"]  # the grid, ascending
    assert d3["alpha"] == max(sorted(map(float, by_alpha)), key=lambda a: by_alpha[str(a)])  # the best on valid
    from singer_rec.pipelines.report.nodes import method_table  # the report reads it as {method: metrics}

    assert method_table(written, "llm_baseline_metrics")["method"].tolist() == list(written)
    model_folder = catalog["bigrec_model"].load()
    meta = json.loads((Path(model_folder) / "singer.json").read_text())
    assert meta["train"]["select_metric"] == "loss"  # title answers: selected on the valid loss


def test_project_conf_is_a_valid_parameter_block():
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_llm_baselines.yml").read_text())["llm_baselines"]
    config = from_params(LLMBaselinesParams, conf, "llm_baselines")
    assert (config.gamma, config.num_beams, config.train["select_metric"]) == (0.0, 10, "loss")
    with pytest.raises(ValueError, match="llm_baselines.train"):
        from_params(LLMBaselinesParams, {**conf, "train": {"lr": 1e-3}}, "llm_baselines")
    with pytest.raises(ValueError, match="llm_baselines.num_beams"):
        from_params(LLMBaselinesParams, {**conf, "num_beams": 5}, "llm_baselines")
    with pytest.raises(ValueError, match="llm_baselines.alphas"):
        from_params(LLMBaselinesParams, {**conf, "alphas": [0.0, -1.0]}, "llm_baselines")
    with pytest.raises(ValueError, match="llm_baselines.assistant is null"):
        from_params(LLMBaselinesParams, {**conf, "alphas": [0.0, 1.0], "assistant": None}, "llm_baselines")
    assert not config.uses_assistant and from_params(LLMBaselinesParams, {**conf, "alphas": [0.0]},
                                                     "llm_baselines").uses_assistant


def test_decoding_device_and_autocast_follow_the_machine(monkeypatch):
    """``device: auto, autocast: auto`` (the defaults): the CPU in float32 without a GPU, so the rows
    above are today's; a wrong value names its key."""
    import contextlib

    import torch

    from singer_rec.params import from_params
    from singer_rec.pipelines.llm_baselines.nodes import LLMBaselinesParams, _decoding, _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = from_params(LLMBaselinesParams, {}, "llm_baselines")
    assert (config.device, config.autocast) == ("auto", "auto") and _device(config) == torch.device("cpu")
    assert isinstance(_decoding(config, torch.nn.Linear(2, 2)), contextlib.nullcontext)  # float32 on a CPU
    assert not isinstance(_decoding(from_params(LLMBaselinesParams, {"autocast": "bf16"}, "llm_baselines"),
                                    torch.nn.Linear(2, 2)), contextlib.nullcontext)
    with pytest.raises(ValueError, match=r"llm_baselines\.autocast must be one of \['auto', 'bf16', 'off'\], got 'on'"):
        from_params(LLMBaselinesParams, {"autocast": "on"}, "llm_baselines")
    with pytest.raises(ValueError, match=r"llm_baselines\.device must be one of auto, cpu, cuda, cuda:N, got 'gpu0'"):
        from_params(LLMBaselinesParams, {"device": "gpu0"}, "llm_baselines")
