"""The rl pipeline with the real runner, the real training process and model folders on disk."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import torch
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro.runner import SequentialRunner

from singer_rec import modeling
from singer_rec.curves import rl_curves
from singer_rec.datasets.model_folder import ModelFolderDataset
from singer_rec.pipelines.rl import create_pipeline
from singer_rec.pipelines.rl.nodes import check_rl_params
from plot_checks import artifacts_by_node, assert_png

PROJECT_ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("tiny_world", PROJECT_ROOT / "tests" / "rl" / "tiny_world.py")
tiny_world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_world)

TINY_SETTINGS = {"num_generations": 4, "batch_size": 8, "micro_batch_size": 64, "rollout_batch_size": 8,
                 "learning_rate": 5e-3, "max_steps": 3, "probe_prompts": 8, "checkpoint_every": 1}


def _catalog(tmp_path, settings, start_from="sft"):
    sft_path, data_path = tiny_world.write(tmp_path / "inputs")
    meta = modeling.read_meta(sft_path)
    items = pd.DataFrame({"item_id": list(meta["titles"]), "title": list(meta["titles"].values())})
    item_sids = pd.DataFrame({"item_id": list(meta["sid_map"]), "sid": list(meta["sid_map"].values())})
    params = {"num_processes": 1, "device": "cpu", "work_dir": str(tmp_path / "rl_work"), "resume": True,
              "start_from": start_from, "settings": settings,
              "base_model": {"preset": "scratch", "scratch": {"hidden_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64,
                             "tokenizer_vocab_size": 300}}}
    return DataCatalog({
        "sft_model": MemoryDataset(sft_path, copy_mode="assign"),
        "rl_dataset": MemoryDataset(pd.read_parquet(data_path)),
        # the tiny world's semantic rows answer with SIDs: they serve as the valid ranking's rows
        "sft_dataset_valid": MemoryDataset(pd.read_parquet(data_path)),
        "items": MemoryDataset(items),
        "item_sids": MemoryDataset(item_sids),
        "params:rl": MemoryDataset(params),
        "params:prompts": MemoryDataset({"templates": {"semantic": ["Recommend for {history}"]}}),
        "params:seed": MemoryDataset(3),
        "rl_model": ModelFolderDataset(filepath=str(tmp_path / "out" / "rl_model")),
        "rl_report": JSONDataset(filepath=str(tmp_path / "out" / "rl_report.json")),
        "rl_history": JSONDataset(filepath=str(tmp_path / "out" / "rl_history.json")),
        "rl_reward_plot": MatplotlibDataset(filepath=str(tmp_path / "out" / "reward_distribution.png")),
        "rl_curves_plot": MatplotlibDataset(filepath=str(tmp_path / "out" / "training_curves.png")),
    })


@pytest.mark.slow
def test_rl_pipeline_trains_in_its_own_process_and_writes_model_report_and_plot(tmp_path):
    catalog = _catalog(tmp_path, TINY_SETTINGS)
    pipeline = create_pipeline()
    assert {n.name for n in pipeline.nodes if "train" in n.tags} == {"train_rl_model"}
    SequentialRunner().run(pipeline, catalog)
    folder = catalog["rl_model"].load()
    model, tokenizer, meta = modeling.load_model_folder(folder)
    assert meta["rl"]["steps"] == 3 and meta["rl"]["settings"]["seed"] == 3  # the global seed
    assert meta["rl"]["prompts"] == 12  # alignment "full": 8 semantic + 4 title rows
    report = json.loads((tmp_path / "out" / "rl_report.json").read_text())
    assert report["steps"] == 3.0 and report["probe_hit_rate_before"] == 0.25  # 2 of 8 before RL
    # the folder records RL's training time, which the report's wall-time column adds to SFT's
    assert meta["rl"]["wall_seconds"] == round(report["wall_seconds"], 2) > 0
    history = json.loads((tmp_path / "out" / "rl_history.json").read_text())
    assert [h["step"] for h in history["history"]] == [1, 2, 3]
    assert len(history["probe"]["before"]["rewards"]) == 8 * 4
    assert (tmp_path / "out" / "reward_distribution.png").stat().st_size > 1000
    curves = rl_curves(history["history"])
    assert list(curves) == ["mean_reward", "hit_rate", "zero_advantage_fraction", "kl"]
    assert all(0.0 <= h["zero_advantage_fraction"] <= 1.0 for h in history["history"])
    assert [step for step, _ in curves["kl"]] == [1, 2, 3]
    assert curves["hit_rate"] == [(h["step"], h["hit_rate"]) for h in history["history"]]
    assert_png(tmp_path / "out" / "training_curves.png")
    # finished: the checkpoints and input copies are gone, only the result stays in the run folder
    (run_dir,) = list((tmp_path / "rl_work").iterdir())
    assert sorted(p.name for p in run_dir.iterdir()) == ["result.json"]


@pytest.mark.slow
def test_rl_ranks_valid_in_its_process_and_keeps_the_best_step(tmp_path):
    settings = {**TINY_SETTINGS, "valid_every": 1, "valid_ranking_rows": 8, "valid_num_beams": 10, "select": "valid"}
    catalog = _catalog(tmp_path, settings)
    SequentialRunner().run(create_pipeline(), catalog)
    history = json.loads((tmp_path / "out" / "rl_history.json").read_text())
    curve = history["valid_curve"]
    assert [p["step"] for p in curve] == [0, 1, 2, 3]
    ndcg = [p["NDCG@10"] for p in curve]
    assert all(0.0 <= v <= 1.0 for v in ndcg) and {"HR@3", "HR@10", "NDCG@5"} <= set(curve[0])
    assert history["selected_step"] == curve[ndcg.index(max(ndcg))]["step"]  # the first of equal bests
    report = json.loads((tmp_path / "out" / "rl_report.json").read_text())
    assert report["valid_ndcg10_best"] == max(ndcg) and report["valid_ndcg10_first"] == ndcg[0]
    assert report["selected_step"] == history["selected_step"]
    curves = rl_curves(history["history"], curve)
    assert curves["valid_NDCG@10"] == [(p["step"], p["NDCG@10"]) for p in curve]
    assert_png(tmp_path / "out" / "training_curves.png")
    # the kept model ranks valid as the curve says of its step (same rows, same beams, same weights)
    from singer_rec.training.validation import RankingValidation

    model, tokenizer, meta = modeling.load_model_folder(catalog["rl_model"].load())
    ranking = RankingValidation.build(tokenizer, meta["sid_map"], catalog["sft_dataset_valid"].load(), 8, 10, 256,
                                      3, max(len(tokenizer), model.config.vocab_size))
    from singer_rec.training import common

    again = ranking.evaluate(model, common.Dist(), 8, None)
    assert again["NDCG@10"] == pytest.approx(max(ndcg), abs=1e-6)


@pytest.mark.slow
def test_rl_only_variant_starts_from_a_base_model_with_the_threads_it_is_given(tmp_path):
    settings = {**TINY_SETTINGS, "max_steps": 1, "alignment": "none", "num_threads": 3}
    catalog = _catalog(tmp_path, settings, start_from="base")
    SequentialRunner().run(create_pipeline(), catalog)
    report = json.loads((tmp_path / "out" / "rl_report.json").read_text())
    assert report["torch_threads"] == 3.0  # rl.settings.num_threads reaches the training process
    _, _, meta = modeling.load_model_folder(catalog["rl_model"].load())
    assert "base_model" in meta["rl"]["started_from"]
    assert meta["train"]["note"].startswith("RL-only")
    assert meta["rl"]["prompts"] == 8


def test_bad_configuration_fails_before_training(tmp_path):
    catalog = _catalog(tmp_path, {**TINY_SETTINGS, "num_generations": 100})
    with pytest.raises(ValueError, match=r"larger than the item catalog \(64 items\)"):
        SequentialRunner().run(create_pipeline(), catalog)
    assert not (tmp_path / "rl_work").exists()  # nothing was written
    with pytest.raises(ValueError, match="rl.start_from must be one of"):
        check_rl_params({"start_from": "scratch"}, 1, 64)


def test_project_conf_parses_into_valid_settings():
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="base")
    params = loader["parameters"]
    settings = check_rl_params(params["rl"], params["seed"], num_items=10_000).settings
    assert settings.num_generations == 16 and settings.reward == "full" and settings.sampling == "beam+prefix"
    assert settings.sid_reward_decay == 0.5 and settings.beta == 0.1 and settings.epsilon == 0.2


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): shards of the batch, all-reduced gradients, same model."""
    from safetensors.torch import load_file

    from singer_rec.training.launch import run_training

    sft_path, data_path = tiny_world.write(tmp_path / "inputs")
    outputs = {}
    for processes in (1, 2):
        config = {"model_path": str(sft_path), "dataset_path": str(data_path), "device": "cpu",
                  "output_path": str(tmp_path / f"out{processes}"), "result_path": str(tmp_path / f"result{processes}.json"),
                  "rl": {**TINY_SETTINGS, "max_steps": 2, "alignment": "sft", "checkpoint_every": 0}}
        result = run_training("singer_rec.training.rl", config, processes)
        outputs[processes] = (result, load_file(str(tmp_path / f"out{processes}" / "model.safetensors")))
    (one, w1), (two, w2) = outputs[1], outputs[2]
    assert [h["hit_rate"] for h in one["history"]] == [h["hit_rate"] for h in two["history"]]
    assert [h["mean_reward"] for h in one["history"]] == pytest.approx([h["mean_reward"] for h in two["history"]])
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], atol=2e-5, rtol=1e-4)


def test_the_curves_plot_is_an_artifact_of_its_nodes_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    history = {"history": [{"step": s, "mean_reward": 0.1 * s, "hit_rate": 0.25, "kl": 0.01 * s} for s in (1, 2)]}
    catalog = DataCatalog({"rl_history": MemoryDataset(history),
                           "rl_curves_plot": MatplotlibDataset(filepath=str(tmp_path / "training_curves.png"))})
    pipeline = create_pipeline().only_nodes("plot_rl_training_curves")
    assert artifacts_by_node(pipeline, catalog, tmp_path) == {"plot_rl_training_curves": ["training_curves.png"]}
    assert_png(tmp_path / "training_curves.png")
