"""evaluate pipeline: both namespaces through the project's catalog config and a real runner; results equal
exhaustive scoring and hand-computed HR/NDCG; report tables on hand-made predictions."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from conftest import PROJECT_ROOT
from decoding.tiny_folder import SIDS, TEST_SEQUENCES, VALID_SEQUENCES, build_tiny_folder, exhaustive_ranking
from singer_rec.modeling import read_meta, training_seconds
from singer_rec.pipelines.evaluate import create_pipeline
from singer_rec.pipelines.evaluate.nodes import evaluate_config, evaluate_test, matching_depth, predict_next_items, report_tables

PARAMS = {"num_beams": 12, "ks": [3, 5, 10], "batch_size": 4, "autocast": "off", "device": "cpu",
          "template_index": 0, "history_length": 10, "max_rows": None, "valid_max_rows": 4}
SERVING = {"enabled": True, "register_as": {"sft": "singer-rec-sft", "rl": "singer-rec"}, "max_batch": 64,
           "default_k": 10, "device": "cpu"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_folder(tmp_path_factory.mktemp("models") / "sft_model")


def _catalog(tmp_path, folder) -> DataCatalog:
    """The project's evaluate catalog entries (paths moved under tmp_path) + in-memory inputs."""
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog_evaluate.yml").read_text())

    def moved(entry: dict) -> dict:
        if isinstance(entry.get("dataset"), dict):  # an OptionalDataset around the file's dataset
            return {**entry, "dataset": moved(entry["dataset"])}
        return {**entry, "filepath": str(tmp_path / entry["filepath"].replace("${globals:data_root}/", ""))}

    catalog = DataCatalog.from_config({name: moved(entry) for name, entry in conf.items()})
    for name, value in {"sft_model": folder, "rl_model": folder, "test_sequences": TEST_SEQUENCES,
                        "valid_sequences": VALID_SEQUENCES, "params:evaluate": PARAMS,
                        "params:serving": SERVING}.items():
        catalog[name] = MemoryDataset(value)
    return catalog


def _expected_metrics(ranks: list[int]) -> dict:
    out = {}
    for k in (3, 5, 10):
        out[f"HR@{k}"] = sum(r <= k for r in ranks) / len(ranks)
        out[f"NDCG@{k}"] = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / len(ranks)
    return out


def test_registered_pipeline_has_both_namespaces():
    pipe = create_pipeline()
    assert {n.name for n in pipe.nodes} == {f"{ns}.{n}" for ns in ("sft", "rl")
                                           for n in ("evaluate_test", "evaluate_valid", "evaluation_report",
                                                     "log_serving_model")}
    assert pipe.inputs() == {"sft_model", "rl_model", "test_sequences", "valid_sequences", "params:evaluate",
                             "params:serving"}
    assert {"sft.test_metrics", "rl.test_metrics", "sft.test_predictions", "rl.test_predictions"} <= pipe.all_outputs()
    assert all("eval" in n.tags for n in pipe.nodes if "evaluate_" in n.name)


def test_sft_namespace_run_matches_exhaustive_scoring(tmp_path, folder):
    catalog = _catalog(tmp_path, folder)
    SequentialRunner().run(create_pipeline().only_nodes_with_namespaces(["sft"]), catalog)
    predictions = pd.read_parquet(tmp_path / "07_model_output/sft/test_predictions.parquet")
    assert list(predictions.columns) == ["user_id", "target", "ranked_items", "scores"]
    ranks = []
    for row, history in enumerate(TEST_SEQUENCES["history"]):
        expected, scores = exhaustive_ranking(folder, history)
        assert list(predictions["ranked_items"][row]) == expected  # beam 12 = every item: the exact ranking
        assert list(predictions["scores"][row]) == pytest.approx([scores[i] for i in expected], abs=1e-4)
        ranks.append(expected.index(TEST_SEQUENCES["target"][row]) + 1)
    metrics = json.loads((tmp_path / "08_reporting/sft/test_metrics.json").read_text())
    cost = {k: metrics.pop(k) for k in ("train_s", "decode_s", "wall_time_s")}
    assert metrics == pytest.approx({**_expected_metrics(ranks), "n": 6})
    # the report's wall time: the training the folder records (none for this hand-built one) + the ranking
    assert cost["train_s"] == sum(training_seconds(read_meta(folder)).values())
    assert cost["decode_s"] > 0 and cost["wall_time_s"] == pytest.approx(cost["train_s"] + cost["decode_s"], abs=0.02)
    valid = json.loads((tmp_path / "08_reporting/sft/valid_metrics.json").read_text())
    metrics.update(cost)
    assert valid["n"] == 4
    report = (tmp_path / "08_reporting/sft/evaluation.md").read_text()
    assert f"| HR@10 | {metrics['HR@10']:.4f} | {valid['HR@10']:.4f} |" in report
    for png in ("hit_rank.png", "hr_by_history_length.png", "sid_depth.png"):
        assert (tmp_path / "08_reporting/sft" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "08_reporting/rl").exists()


def test_unknown_target_and_small_beam_fail_clearly(folder):
    bad = TEST_SEQUENCES.assign(target=["i2", "nope", "i6", "i10", "i0", "i5"])
    with pytest.raises(ValueError, match=r"test_sequences row 1 \(user u2\): target item 'nope'"):
        evaluate_test(folder, bad, PARAMS)
    bad_history = TEST_SEQUENCES.assign(history=[["i0"], ["i2"], ["zz"], ["i1"], ["i1"], ["i1"]])
    with pytest.raises(ValueError, match="test_sequences row 2: item 'zz' has no SID"):
        evaluate_test(folder, bad_history, PARAMS)
    with pytest.raises(ValueError, match="num_beams=5 must be >= the largest K"):
        evaluate_test(folder, TEST_SEQUENCES, {**PARAMS, "num_beams": 5})


def test_report_tables_on_hand_made_predictions():
    sequences = pd.DataFrame({"user_id": ["a", "b", "c"], "history": [["i0"], ["i0", "i1"], ["i2"]],
                              "target": ["i1", "i10", "i3"]})
    predictions = pd.DataFrame({"user_id": ["a", "b", "c"], "target": ["i1", "i10", "i3"],
                                "ranked_items": [["i1", "i0"], ["i9", "i10"], ["i4", "i5"]],
                                "scores": [[-1.0, -2.0]] * 3})
    tables = report_tables(sequences, predictions, SIDS)
    assert tables["hit_ranks"].to_dict("list") == {"rank": [1, 2, "miss"], "rows": [1, 1, 1]}
    assert tables["hr_by_history"].to_dict("list") == {"history_length": [1, 2], "rows": [2, 1], "hr_at_10": [0.5, 1.0]}
    # top-1 vs target: i1/i1 exact (3 levels), i9/i10 share 3 of 4, i4/i3 differ at the first level
    assert tables["sid_depth"]["rows"].tolist() == [1, 0, 0, 2, 0]
    assert matching_depth("<a_2><b_2><c_0><d_0>", "<a_2><b_2><c_0><d_1>") == 3
    assert matching_depth("<a_0><b_1><c_0>", "<a_0><b_0><c_0>") == 1
    with pytest.raises(ValueError, match="test_predictions row 0 does not match"):
        report_tables(sequences.iloc[::-1], predictions, SIDS)


def test_test_metrics_carry_the_training_time_the_folder_records(tmp_path, folder):
    import shutil

    copy = tmp_path / "rl_model"
    shutil.copytree(folder, copy)
    meta = read_meta(copy)
    meta["train"] = {**meta.get("train", {}), "result": {"wall_s": 12.5}}
    meta["rl"] = {"steps": 4, "wall_seconds": 3.25}
    (copy / "singer.json").write_text(json.dumps(meta))
    _, metrics = evaluate_test(copy, TEST_SEQUENCES, PARAMS)
    assert metrics["train_s"] == 15.75  # SFT 12.5 s + RL 3.25 s
    assert metrics["wall_time_s"] == pytest.approx(15.75 + metrics["decode_s"], abs=0.01)


def test_device_and_autocast_auto_on_a_cpu_rank_as_cpu_float32(folder, monkeypatch):
    """The defaults (``device: auto``, ``autocast: auto``) on a machine without CUDA are the CPU in
    float32: the same predictions, scores included, as ``device: cpu, autocast: off``."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    defaults = {k: v for k, v in PARAMS.items() if k not in ("device", "autocast")}
    assert (evaluate_config(defaults).device, evaluate_config(defaults).autocast) == ("auto", "auto")
    auto = predict_next_items(folder, TEST_SEQUENCES, defaults, "test_sequences")
    cpu = predict_next_items(folder, TEST_SEQUENCES, PARAMS, "test_sequences")
    pd.testing.assert_frame_equal(auto, cpu)


def test_old_and_wrong_device_keys_are_named():
    with pytest.raises(ValueError, match=r"evaluate\.autocast_dtype was renamed to autocast"):
        evaluate_config({**PARAMS, "autocast_dtype": "bfloat16"})
    with pytest.raises(ValueError, match=r"evaluate\.device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"):
        evaluate_config({**PARAMS, "device": "gpu"})
    with pytest.raises(ValueError, match=r"evaluate\.autocast must be one of \['auto', 'bf16', 'off'\], got 'bfloat16'"):
        evaluate_config({**PARAMS, "autocast": "bfloat16"})
    assert evaluate_config({**PARAMS, "device": "cuda:1", "autocast": "bf16"}).device == "cuda:1"
