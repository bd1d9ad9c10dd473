"""The ablation runner with the real runner: variants trained and evaluated, one table out."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from singer_rec import modeling
from singer_rec.pipelines.ablations import create_pipeline
from singer_rec.pipelines.ablations.nodes import variant_settings
from singer_rec.pipelines.evaluate.nodes import evaluate_test

PROJECT_ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("tiny_world", PROJECT_ROOT / "tests" / "rl" / "tiny_world.py")
tiny_world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_world)

RL_SETTINGS = {"group_size": 4, "batch_size": 8, "micro_batch_size": 64, "rollout_batch_size": 8,
               "learning_rate": 5e-3, "max_steps": 2, "probe_prompts": 8}
TINY_SFT = {"num_processes": 1, "resume": True,
            "model": {"preset": "scratch", "scratch": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                       "num_key_value_heads": 1, "intermediate_size": 64,
                                                       "tokenizer_vocab_size": 300}},
            "train": {"lr": 1e-3, "batch_size": 8, "micro_batch_size": 8, "epochs": 1, "max_steps": 1,
                      "checkpoint_every": 10, "autocast": "off", "device": "cpu", "max_length": 64}}
EVALUATE = {"num_beams": 10, "ks": [3, 5, 10], "batch_size": 8, "device": "cpu", "template_index": 0,
            "history_length": 10, "max_rows": None}
DEFINITIONS = {"sft-only": "sft-only", "singer": {}, "grpo-acc": {"reward": "acc", "sampling": "beam"},
               "align-none": {"alignment": "none"}}


@pytest.mark.slow
def test_ablations_write_one_table_with_every_variant(tmp_path):
    sft_path, data_path = tiny_world.write(tmp_path / "inputs")
    meta = modeling.read_meta(sft_path)
    frame = pd.read_parquet(data_path)
    items = pd.DataFrame({"item_id": list(meta["titles"]), "title": list(meta["titles"].values()),
                          "description": "", "brand": ""})
    item_sids = pd.DataFrame({"item_id": list(meta["sid_map"]), "sid": list(meta["sid_map"].values())})
    test_sequences = tiny_world.sequences()
    catalog = DataCatalog({
        "sft_model": MemoryDataset(sft_path, copy_mode="assign"),
        "sft_dataset_train": MemoryDataset(frame), "sft_dataset_valid": MemoryDataset(frame),
        "rl_dataset": MemoryDataset(frame), "items": MemoryDataset(items), "item_sids": MemoryDataset(item_sids),
        "test_sequences": MemoryDataset(test_sequences),
        "params:ablations": MemoryDataset({"work_dir": str(tmp_path / "work"), "definitions": DEFINITIONS,
                                           "variants": ["sft-only", "grpo-acc", "align-none"]}),
        "params:rl": MemoryDataset({"num_processes": 1, "device": "cpu", "settings": RL_SETTINGS}),
        "params:sft": MemoryDataset(TINY_SFT),
        "params:prompts": MemoryDataset({"templates": {"semantic": [tiny_world.TEMPLATE]}}),
        "params:evaluate": MemoryDataset(EVALUATE), "params:seed": MemoryDataset(1),
        "ablation_table": CSVDataset(filepath=str(tmp_path / "out" / "ablations.csv"), save_args={"index": False}),
        "ablation_table_markdown": TextDataset(filepath=str(tmp_path / "out" / "ablations.md")),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    table = pd.read_csv(tmp_path / "out" / "ablations.csv")
    assert table["variant"].tolist() == ["sft-only", "grpo-acc", "align-none"]
    assert table[["alignment", "sampling", "reward"]].values.tolist() == [
        ["sft", "-", "-"], ["full", "beam", "acc"], ["none", "beam+prefix", "full"]]
    assert table["n"].tolist() == [8, 8, 8] and table["rl_steps"].tolist() == [0, 2, 2]
    # the sft-only row is exactly the evaluate stage's metrics of the SFT model
    _, direct = evaluate_test(sft_path, test_sequences, EVALUATE)
    for metric in ("HR@3", "NDCG@3", "HR@10", "NDCG@10"):
        assert table.loc[0, metric] == pytest.approx(direct[metric])
    markdown = (tmp_path / "out" / "ablations.md").read_text()
    assert markdown.startswith("| variant | alignment | sampling | reward | HR@3 |")
    assert len(markdown.strip().splitlines()) == 2 + 3


def test_unknown_or_invalid_variant_fails_before_training():
    with pytest.raises(ValueError, match=r"unknown ablation variant\(s\) \['sid_all'\]"):
        variant_settings(["singer", "sid_all"], DEFINITIONS, {"settings": RL_SETTINGS}, 1, 64)
    with pytest.raises(ValueError, match=r"ablation variant 'big-k': rl group_size \(k=99\) is larger"):
        variant_settings(["big-k"], {"big-k": {"group_size": 99}}, {"settings": RL_SETTINGS}, 1, 64)
    resolved = variant_settings(["sft-only", "grpo-acc"], DEFINITIONS, {"settings": RL_SETTINGS}, 1, 64)
    assert resolved["sft-only"] is None and resolved["grpo-acc"] == {**RL_SETTINGS, "reward": "acc", "sampling": "beam"}
