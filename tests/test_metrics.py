import math

import numpy as np
import pytest

from singer_rec.metrics import hit_rank, metrics_from_ranks, ranking_metrics, ranks_from_scores


def test_hand_computed_hr_ndcg():
    ranked = [["a", "b", "c", "d", "e", "f"], ["x", "y", "z", "t", "u", "v"], ["p", "q", "r", "s", "w", "o"]]
    targets = ["c", "u", "nope"]  # ranks 3, 5, absent
    m = ranking_metrics(ranked, targets, ks=(3, 5))
    assert m["HR@3"] == pytest.approx(1 / 3)
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(4)) / 3)
    assert m["NDCG@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(6)) / 3)
    assert m["n"] == 3


def test_rank_one_gives_ndcg_one():
    assert metrics_from_ranks([1, 1]) == {"HR@3": 1.0, "NDCG@3": 1.0, "HR@5": 1.0, "NDCG@5": 1.0, "HR@10": 1.0, "NDCG@10": 1.0, "n": 2}


def test_hit_rank_and_errors():
    assert hit_rank(["a", "b"], "b") == 2
    assert hit_rank(["a", "b"], "c") is None
    with pytest.raises(ValueError, match="2 ranked lists but 1 targets"):
        ranking_metrics([["a"], ["b"]], ["a"])
    with pytest.raises(ValueError, match="zero rows"):
        metrics_from_ranks([])


def test_full_ranking_ranks_ties_pessimistic():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]])
    assert ranks_from_scores(scores, np.array([2, 0])).tolist() == [2, 2]


def test_per_row_gain_means_are_the_metrics_and_bad_names_fail():
    from singer_rec.metrics import per_row_gain

    ranks = [1, 3, None, 12]
    assert per_row_gain(ranks, "HR@10").tolist() == [1.0, 1.0, 0.0, 0.0]
    assert per_row_gain(ranks, "NDCG@10").tolist() == [1.0, 0.5, 0.0, 0.0]
    assert per_row_gain(ranks, "NDCG@10").mean() == metrics_from_ranks(ranks)["NDCG@10"]
    with pytest.raises(ValueError, match="HR@K or NDCG@K"):
        per_row_gain(ranks, "MRR")


def test_paired_bootstrap_difference_and_interval():
    from singer_rec.metrics import paired_bootstrap

    same = paired_bootstrap([1, 2, None], [1, 2, None])
    assert same == {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "rows_up": 0, "rows_down": 0, "n": 3}
    # B moves two of four rows from a miss to rank 1: +0.5 NDCG@10; every resample's mean lies in [0, 1]
    out = paired_bootstrap([None, None, 3, 1], [1, 1, 3, 1], "NDCG@10", resamples=500, seed=1)
    assert out["mean"] == 0.5 and out["rows_up"] == 2 and out["rows_down"] == 0
    assert 0.0 <= out["ci95_low"] < 0.5 < out["ci95_high"] <= 1.0
    assert out == paired_bootstrap([None, None, 3, 1], [1, 1, 3, 1], "NDCG@10", resamples=500, seed=1)
    with pytest.raises(ValueError, match="paired rows needed"):
        paired_bootstrap([1], [1, 2])


def _quality_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_summary_mean_and_sample_sd_over_metrics_files(tmp_path, capsys):
    """benchmarks/quality/seed_summary.py: mean and n−1 sd per metric; files on unequal rows refused."""
    import json

    module = _quality_script("seed_summary")
    files = []
    for seed, (hr, ndcg) in enumerate([(0.10, 0.06), (0.12, 0.08), (0.14, 0.07)]):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"HR@10": hr, "NDCG@10": ndcg, "n": 50}))
        files.append(path)
    out = module.summarise(files, ("HR@10", "NDCG@10"))
    assert out["seeds"] == 3 and out["n"] == 50
    assert out["HR@10"]["mean"] == pytest.approx(0.12) and out["HR@10"]["sd"] == pytest.approx(0.02)
    assert out["NDCG@10"]["mean"] == pytest.approx(0.07) and out["NDCG@10"]["sd"] == pytest.approx(0.01)
    assert module.summarise(files[:1], ("HR@10",))["HR@10"]["sd"] == 0.0
    assert module.markdown({"SFT": out}, ("HR@10", "NDCG@10")).splitlines()[-1] == \
        "| SFT | 3 | 0.1200 ± 0.0200 | 0.0700 ± 0.0100 |"

    (tmp_path / "short.json").write_text(json.dumps({"HR@10": 0.1, "NDCG@10": 0.1, "n": 40}))
    with pytest.raises(ValueError, match="different numbers of rows"):
        module.summarise([files[0], tmp_path / "short.json"], ("HR@10", "NDCG@10"))
    (tmp_path / "bad.json").write_text(json.dumps({"HR@10": 0.1, "n": 50}))
    with pytest.raises(ValueError, match="bad.json: no field NDCG@10"):
        module.summarise([tmp_path / "bad.json"], ("HR@10", "NDCG@10"))
    assert module.main(["--model", "RL", str(tmp_path / "bad.json")]) == 2
    assert "no field" in capsys.readouterr().err


def test_transition_breakdown_groups_rows_and_splits_ndcg_into_parts(tmp_path):
    """benchmarks/quality/transition_breakdown.py: groups by the train transition of the last item,
    exact per-group metrics for the Markov chain and a model, parts summing to the whole."""
    import json

    import pandas as pd

    module = _quality_script("transition_breakdown")
    data = tmp_path / "data"
    (data / "02_intermediate").mkdir(parents=True)
    (data / "03_primary").mkdir()
    pd.DataFrame({"item_id": list("abcde")}).to_parquet(data / "02_intermediate/items.parquet")
    train = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "history": [["a"], ["d", "a"], ["b"]],
                          "target": ["b", "b", "c"], "timestamp": [0, 1, 2]})
    test = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "history": [["c", "a"], ["b"], ["d"]],
                         "target": ["b", "d", "e"], "timestamp": [3, 4, 5]})
    train.to_parquet(data / "03_primary/train_sequences.parquet")
    test.to_parquet(data / "03_primary/test_sequences.parquet")
    (tmp_path / "sft").mkdir()
    predictions = tmp_path / "sft" / "test_predictions.parquet"
    pd.DataFrame({"user_id": test["user_id"], "target": test["target"],
                  "ranked_items": [["c", "b"], ["d"], ["a"]]}).to_parquet(predictions)
    out = tmp_path / "breakdown.json"
    assert module.main([str(data), str(predictions), "--out", str(out)]) == 0
    groups = json.loads(out.read_text())["groups"]
    # a->b seen; b has successor c, not d; d has none. Markov: b at 1; c, b, a, d -> d at 4; b, c, a, d, e -> e at 5
    markov, sft = groups["all"]["Markov chain"], groups["all"]["sft"]
    assert markov["HR@1"] == pytest.approx(1 / 3) and markov["HR@10"] == 1.0
    assert markov["NDCG@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(6)) / 3)
    assert sft["HR@10"] == pytest.approx(2 / 3) and sft["NDCG@10"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert [groups[g]["sft"]["rows"] for g in module.GROUPS] == [1, 1, 1]
    assert groups["seen"]["sft"]["NDCG@10"] == pytest.approx(1 / math.log2(3))
    assert groups["no successor"]["Markov chain"]["NDCG@10"] == pytest.approx(1 / math.log2(6))
    assert sum(groups[g]["sft"]["NDCG@10 part"] for g in module.GROUPS) == pytest.approx(sft["NDCG@10"])

    pd.DataFrame({"user_id": ["u1"], "target": ["b"], "ranked_items": [["b"]]}).to_parquet(predictions)
    with pytest.raises(ValueError, match="not the test split's rows"):
        module.main([str(data), str(predictions)])


def test_ablation_summary_pairs_each_variant_with_sft_and_singer(tmp_path, capsys):
    """benchmarks/quality/ablation_summary.py: exact differences against SFT and SINGER on the same
    rows, the runs' reports and valid curves carried over, a missing variant refused by name."""
    import json

    import pandas as pd

    module = _quality_script("ablation_summary")
    root = tmp_path / "office"
    users, targets = ["u1", "u2", "u3", "u4"], ["a", "b", "c", "d"]
    ranked = {"sft": [["a"], ["x", "b"], ["x"], ["x"]],          # hits at 1, 2
              "rl": [["a"], ["b"], ["x"], ["x"]],                 # hits at 1, 1
              "beam": [["x", "a"], ["b"], ["c"], ["x"]]}          # hits at 2, 1, 1
    for name, items in ranked.items():
        (root / "07_model_output" / name).mkdir(parents=True)
        pd.DataFrame({"user_id": users, "target": targets, "ranked_items": items}).to_parquet(
            root / "07_model_output" / name / "test_predictions.parquet")
    for folder, kl in (("rl", 0.25), ("ablations/beam", 0.09)):
        (root / "08_reporting" / folder).mkdir(parents=True)
        (root / "08_reporting" / folder / "train_report.json").write_text(json.dumps({"last_kl": kl, "wall_seconds": 600}))
        (root / "08_reporting" / folder / "train_history.json").write_text(
            json.dumps({"valid_curve": [{"step": 0, "NDCG@10": 0.1}, {"step": 25, "NDCG@10": 0.12}]}))

    out = module.summarise(root, ["beam"], "toy", resamples=50)
    gain2 = 1 / math.log2(3)
    assert out["sft_test"]["NDCG@10"] == pytest.approx((1 + gain2) / 4)
    assert out["singer_minus_sft"]["NDCG@10"]["mean"] == pytest.approx(round((1 - gain2) / 4, 5))
    beam = out["variants"]["beam"]
    assert beam["test"]["HR@10"] == 0.75 and beam["report"]["last_kl"] == 0.09
    assert beam["minus_sft"]["NDCG@10"]["mean"] == pytest.approx(round((1 - gain2 + 1 - 1 + gain2) / 4, 5))
    assert beam["minus_singer"]["NDCG@10"]["mean"] == pytest.approx(round((gain2 - 1 + 1) / 4, 5))
    assert [p["step"] for p in out["variants"]["singer"]["valid_curve"]] == [0, 25]
    table = module.markdown(out).splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| sft-only", "| beam", "| singer"]
    assert table[3].endswith("| 0.09 | 10.0 |")
    figure = tmp_path / "ablations.png"
    module.plot(out, figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert module.main([str(root), "beam", "dynamic"]) == 2
    assert "07_model_output/dynamic/test_predictions.parquet" in capsys.readouterr().err

    (root / "07_model_output" / "acc").mkdir()
    pd.DataFrame({"user_id": users[:3], "target": targets[:3], "ranked_items": [["a"]] * 3}).to_parquet(
        root / "07_model_output" / "acc" / "test_predictions.parquet")
    with pytest.raises(ValueError, match="same \\(user_id, target\\) rows"):
        module.summarise(root, ["acc"], "toy", resamples=50)


@pytest.mark.slow
def test_rank_valid_scores_every_valid_row_as_the_evaluate_stage(tmp_path, capsys):
    """benchmarks/quality/rank_valid.py: each model's metrics are evaluate_valid's over all valid rows
    (the project's evaluate parameters), the second model is paired with the first, and a folder that
    is no model is refused by name."""
    import importlib.util
    import json
    from pathlib import Path

    from singer_rec.pipelines.evaluate.nodes import evaluate_valid

    spec = importlib.util.spec_from_file_location("tiny_world", Path(__file__).parent / "rl" / "tiny_world.py")
    tiny_world = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_world)
    module = _quality_script("rank_valid")
    data = tmp_path / "office"
    (data / "03_primary").mkdir(parents=True)
    valid = tiny_world.sequences()
    valid.to_parquet(data / "03_primary" / "valid_sequences.parquet")
    model_a, _ = tiny_world.write(tmp_path / "a", seed=0)
    model_b, _ = tiny_world.write(tmp_path / "b", seed=1)
    out = tmp_path / "valid.json"
    assert module.main([str(data), str(model_a), str(model_b), "--env", "local", "--resamples", "50",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    params = {**module.evaluate_parameters("local"), "valid_max_rows": None}
    expected = {str(m): evaluate_valid(m, valid, params) for m in (model_a, model_b)}
    assert result["rows"] == len(valid) == 8
    for model, metrics in expected.items():
        assert result["models"][model]["valid"] == pytest.approx({k: round(metrics[k], 5) for k in module.SHOWN})
    difference = result["models"][str(model_b)]["minus_first"]["NDCG@10"]["mean"]
    assert difference == pytest.approx(expected[str(model_b)]["NDCG@10"] - expected[str(model_a)]["NDCG@10"], abs=1e-5)
    assert "minus_first" not in result["models"][str(model_a)]

    assert module.main([str(data), str(tmp_path / "nothing")]) == 2
    assert "nothing is not a model folder" in capsys.readouterr().err
    # --split test ranks the test rows the same way (for reporting a model valid has selected)
    assert module.main([str(data), str(model_a), "--env", "local", "--split", "test"]) == 2
    assert "test_sequences.parquet: no test split" in capsys.readouterr().err
    test = valid.iloc[:5].reset_index(drop=True)
    test.to_parquet(data / "03_primary" / "test_sequences.parquet")
    assert module.main([str(data), str(model_a), "--env", "local", "--split", "test", "--out", str(out)]) == 0
    tested = json.loads(out.read_text())
    assert tested["split"] == "test" and tested["rows"] == 5
    expected_test = evaluate_valid(model_a, test, params)
    assert tested["models"][str(model_a)]["test"] == pytest.approx({k: round(expected_test[k], 5) for k in module.SHOWN})


def test_rl_direction_probe_noise_stats_exact():
    """benchmarks/quality/rl_direction_probe.py: the gradient noise scale from per-batch gradients.

    Batches of b = 2 with gradients (3, 1) and (1, 3): E|g_b|² = 10 = |G|² + tr(Σ)/2 and the mean
    over B = 4 prompts, |(2, 2)|² = 8 = |G|² + tr(Σ)/4, so tr(Σ) = 8, |G|² = 6, B_noise = 4/3;
    their cosine is 6/10. Equal batch gradients are noise-free: cosine 1, tr(Σ) = 0.
    """
    import torch

    probe = _quality_script("rl_direction_probe")
    out = probe.noise_stats([torch.tensor([3.0, 1.0]), torch.tensor([1.0, 3.0])], batch_size=2)
    assert out["pairwise_cosine"] == pytest.approx(0.6)
    assert out["signal_sq"] == pytest.approx(6.0) and out["trace_sigma"] == pytest.approx(8.0)
    assert out["noise_scale_prompts"] == pytest.approx(4 / 3)
    same = probe.noise_stats([torch.tensor([1.0, 1.0])] * 3, batch_size=32)
    assert same["pairwise_cosine"] == pytest.approx(1.0)
    assert same["trace_sigma"] == pytest.approx(0.0, abs=1e-9) and same["noise_scale_prompts"] == pytest.approx(0.0, abs=1e-9)
    orthogonal = probe.noise_stats([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], batch_size=32)
    assert orthogonal["signal_sq"] == pytest.approx(0.0, abs=1e-12)  # all noise: no measurable signal
    assert orthogonal["noise_scale_prompts"] is None


def test_rl_direction_probe_control_rows_never_touch_the_ranked_rows():
    """The probe's valid control fits rows that the valid ranking (SFT's seeded sample) never ranks."""
    import pandas as pd

    from singer_rec.training.validation import seeded_sample

    probe = _quality_script("rl_direction_probe")
    frame = pd.DataFrame({"row": range(50)})
    ranked = set(seeded_sample(frame, 20, 7)["row"])
    control = probe.unranked_rows(50, 20, 7, 25)
    assert len(control) == 25 == len(set(control)) and not ranked & set(control)
    assert probe.unranked_rows(50, 20, 7, 100) and len(probe.unranked_rows(50, 20, 7, 100)) == 30  # all the rest
    with pytest.raises(SystemExit, match="all 50 valid rows are ranked"):
        probe.unranked_rows(50, 50, 7, 5)
