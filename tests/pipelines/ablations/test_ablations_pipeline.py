"""The ablation runner with the real runner: variants trained and evaluated, one table out."""
import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from singer_rec import modeling
from singer_rec.pipelines.ablations import create_pipeline
from singer_rec.pipelines.ablations import nodes as ablation_nodes
from singer_rec.pipelines.ablations import pipeline as ablation_pipeline
from singer_rec.pipelines.ablations.nodes import variant_settings
from singer_rec.training.rl.settings import RLSettings
from singer_rec.pipelines.evaluate.nodes import evaluate_test

PROJECT_ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("tiny_world", PROJECT_ROOT / "tests" / "rl" / "tiny_world.py")
tiny_world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_world)

RL_SETTINGS = {"num_generations": 4, "batch_size": 8, "micro_batch_size": 64, "rollout_batch_size": 8,
               "learning_rate": 5e-3, "max_steps": 2, "probe_prompts": 8}
TINY_SFT = {"num_processes": 1, "resume": True,
            "model": {"preset": "scratch", "scratch": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                       "num_key_value_heads": 1, "intermediate_size": 64,
                                                       "tokenizer_vocab_size": 300}},
            "train": {"learning_rate": 1e-3, "batch_size": 8, "micro_batch_size": 8, "epochs": 1, "max_steps": 1,
                      "checkpoint_every": 10, "autocast": "off", "device": "cpu", "max_length": 64}}
EVALUATE = {"num_beams": 10, "ks": [3, 5, 10], "batch_size": 8, "device": "cpu", "template_index": 0,
            "history_length": 10, "max_rows": None}
DEFINITIONS = {"sft-only": "sft-only", "singer": {}, "grpo-acc": {"reward": "acc", "sampling": "beam"},
               "align-none": {"alignment": "none"}}  # ablations.definitions, one namespace each


def _ablation_params(tmp_path) -> dict:
    return {"work_dir": str(tmp_path / "work"), "definitions": DEFINITIONS, "evaluate": {"max_rows": None}}


@pytest.mark.slow
def test_ablations_write_one_table_with_every_variant(tmp_path, monkeypatch):
    # laid out like a versioned dataset: <root>/<version>/sft_model
    sft_path, data_path = tiny_world.write(tmp_path / "models" / "2026-01-01T00.00.00.000Z")
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
        "params:ablations": MemoryDataset(_ablation_params(tmp_path)),
        "params:rl": MemoryDataset({"num_processes": 1, "device": "cpu", "settings": RL_SETTINGS}),
        "params:sft": MemoryDataset(TINY_SFT),
        "params:prompts": MemoryDataset({"templates": {"semantic": [tiny_world.TEMPLATE]}}),
        "params:evaluate": MemoryDataset(EVALUATE), "params:seed": MemoryDataset(1),
        # the unseen-domain study, here with the same domain: the retargeted model must score as the source
        "params:unseen_domain": MemoryDataset({"model_path": str(sft_path.parent.parent), "work_dir": str(tmp_path / "unseen")}),
        "ablation_table": CSVDataset(filepath=str(tmp_path / "out" / "ablations.csv"), save_args={"index": False}),
        "ablation_table_markdown": TextDataset(filepath=str(tmp_path / "out" / "ablations.md")),
    })
    # the SFT stage is its owner's to test: here it stands in as a recorder that hands back a copy of
    # the SFT model, so the test checks what the ablations ask of it (semantic rows only) and use
    sft_calls = []

    def sft_without_alignment(train, valid, items_, item_sids_, params, prompts, seed):
        sft_calls.append((sorted(set(train["task"])), sorted(set(valid["task"])), params["work_dir"], seed))
        copy = Path(params["work_dir"]) / "model"
        shutil.copytree(sft_path, copy)
        return str(copy), {}

    monkeypatch.setattr(ablation_pipeline, "train_sft_model", sft_without_alignment)
    SequentialRunner().run(create_pipeline(DEFINITIONS), catalog)
    assert sft_calls == [(["semantic"], ["semantic"], str(tmp_path / "work" / "sft-semantic"), 1)]
    table = pd.read_csv(tmp_path / "out" / "ablations.csv")
    # the semantic-only SFT model, evaluated in its own namespace, is the last row (alignment none, no RL)
    assert table["variant"].tolist() == [*DEFINITIONS, "sft-semantic"]
    assert table[["alignment", "sampling", "reward", "title_reward", "guide_depth"]].values.tolist() == [
        ["sft", "-", "-", "-", "-"], ["full", "beam+prefix", "full", "acc-rank", "schedule"],
        ["full", "beam", "acc", "acc-rank", "schedule"], ["none", "beam+prefix", "full", "acc-rank", "schedule"],
        ["none", "-", "-", "-", "-"]]
    assert table["n"].tolist() == [8, 8, 8, 8, 8] and table["rl_steps"].tolist() == [0, 2, 2, 2, 0]
    assert table["run"].tolist() == [True] * 5
    # the sft-only row is exactly the evaluate stage's metrics of the SFT model; the sft-semantic row
    # too, since the stand-in SFT stage above hands back a copy of that model
    _, direct = evaluate_test(sft_path, test_sequences, EVALUATE)
    for metric in ("HR@3", "NDCG@3", "HR@10", "NDCG@10"):
        assert table.loc[0, metric] == pytest.approx(direct[metric])
        assert table.loc[4, metric] == pytest.approx(direct[metric])
    # each RL variant trained in its own work folder (one finished run each)
    for variant in ("singer", "grpo-acc", "align-none"):
        runs = [p for p in (tmp_path / "work" / variant).iterdir() if (p / "model" / modeling.META_FILE).is_file()]
        assert len(runs) == 1, variant
    unseen = catalog["unseen_domain_metrics"].load()
    assert unseen["trained_on"] == str(sft_path)  # found inside the (versioned-like) root
    ranking = [m for m in direct if "@" in m]  # the timings (train_s, decode_s, wall_time_s) differ per call
    assert {m: unseen[m] for m in ranking} == pytest.approx({m: direct[m] for m in ranking})
    markdown = (tmp_path / "out" / "ablations.md").read_text()
    assert markdown.startswith("| variant | alignment | sampling | reward | title_reward | guide_depth | HR@3 |")
    assert len(markdown.strip().splitlines()) == 2 + 5


def test_one_namespace_per_variant_and_a_table_over_them():
    pipe = create_pipeline(DEFINITIONS)
    namespaces = {node.namespace for node in pipe.nodes if node.namespace}
    assert namespaces == {*DEFINITIONS, "sft-semantic"}
    # `kedro run --pipelines=ablations --namespaces=grpo-acc`: that variant's nodes only, on the shared inputs
    one = pipe.filter(node_namespaces=["grpo-acc"])
    assert sorted(n.name for n in one.nodes) == [
        "grpo-acc.evaluate_test", "grpo-acc.plot_rl_reward_distribution", "grpo-acc.train_rl_model",
        "grpo-acc.variant_parameters"]
    assert one.inputs() == {"sft_model", "rl_dataset", "sft_dataset_valid", "items", "item_sids", "test_sequences", "params:rl",
                            "params:evaluate", "params:ablations", "params:prompts", "params:seed"}
    assert pipe.filter(node_namespaces=["align-none"]).inputs() >= {"sft-semantic.sft_model"}
    assert sorted(n.name for n in pipe.filter(node_namespaces=["sft-semantic"]).nodes) == [
        "sft-semantic.evaluate_test", "sft-semantic.semantic_sft_params", "sft-semantic.semantic_train_rows",
        "sft-semantic.semantic_valid_rows", "sft-semantic.train_sft_model", "sft-semantic.variant_parameters"]
    (table,) = [n for n in pipe.nodes if n.name == "build_ablation_table"]
    assert set(table.inputs) == {"params:ablations", "params:rl", "sft-only.test_metrics", "singer.test_metrics",
                                 "grpo-acc.test_metrics", "align-none.test_metrics", "singer.rl_report",
                                 "grpo-acc.rl_report", "align-none.rl_report", "sft-semantic.test_metrics"}
    # without an alignment variant that needs it, neither the semantic-only SFT model nor its row
    plain = create_pipeline({"sft-only": "sft-only", "singer": {}})
    assert not {n.namespace for n in plain.nodes} & {"sft-semantic"}
    (table,) = [n for n in plain.nodes if n.name == "build_ablation_table"]
    assert "sft-semantic.test_metrics" not in table.inputs


def test_the_table_names_variants_not_run_yet(tmp_path):
    table, markdown = ablation_nodes.ablation_table(
        _ablation_params(tmp_path), {"settings": RL_SETTINGS},
        **{"sft-only.test_metrics": {**{m: 0.5 for m in ablation_nodes.METRICS}, "n": 4}})
    assert table["run"].tolist() == [True, False, False, False]
    assert table["n"].tolist() == [4, 0, 0, 0] and table.loc[1:, "HR@10"].isna().all()
    assert "| singer | full | beam+prefix | full | acc-rank | schedule | nan |" in markdown


def test_the_project_pipeline_has_a_namespace_per_conf_definition():
    from singer_rec.pipelines.ablations.pipeline import conf_definitions

    definitions = conf_definitions(PROJECT_ROOT / "conf")
    assert list(definitions)[:4] == ["sft-only", "singer", "grpo-acc", "minionerec"] and len(definitions) == 15
    namespaces = {n.namespace for n in create_pipeline(definitions).nodes if n.namespace}
    assert namespaces == {*definitions, "sft-semantic"}


def test_unknown_or_invalid_variant_fails_before_training():
    with pytest.raises(ValueError, match=r"unknown ablation variant\(s\) \['sid_all'\]"):
        variant_settings(["singer", "sid_all"], DEFINITIONS, {"settings": RL_SETTINGS}, 1, 64)
    with pytest.raises(ValueError, match=r"ablation variant 'big-k': rl num_generations \(k=99\) is larger"):
        variant_settings(["big-k"], {"big-k": {"num_generations": 99}}, {"settings": RL_SETTINGS}, 1, 64)
    resolved = variant_settings(["sft-only", "grpo-acc"], DEFINITIONS, {"settings": RL_SETTINGS}, 1, 64)
    assert resolved["sft-only"] is None and resolved["grpo-acc"] == {**RL_SETTINGS, "reward": "acc", "sampling": "beam"}


@pytest.mark.parametrize("alignment,tasks,fails", [
    ("full", ["semantic"], True), ("sft", ["semantic"], True),           # alignment in SFT, none taught
    ("full", ["semantic", "title_to_sid"], False), ("sft", ["semantic", "sid_to_title"], False),
    ("rl", ["semantic"], False), ("none", ["semantic"], False),           # the semantic-only start is right
    ("full", None, False),                                                # older folder: tasks not recorded
])
def test_variants_with_alignment_in_sft_need_a_start_model_taught_the_alignment_tasks(alignment, tasks, fails):
    meta = {"sid_map": {}, "train": {} if tasks is None else {"tasks": tasks}}
    check = lambda: ablation_nodes.check_start_model_alignment("align-sft", RLSettings(alignment=alignment), meta)  # noqa: E731
    if fails:
        with pytest.raises(ValueError, match=rf"'align-sft' \(rl.settings.alignment='{alignment}'\) puts the alignment "
                                             r"tasks in SFT, but its start model was trained on \['semantic'\] only"):
            check()
    else:
        check()
    # a variant's own semantic_tasks decide what counts as semantic
    if tasks == ["semantic", "title_to_sid"]:
        with pytest.raises(ValueError, match="trained on"):
            ablation_nodes.check_start_model_alignment(
                "x", RLSettings(alignment=alignment, semantic_tasks=["semantic", "title_to_sid"]), meta)


def test_retarget_needs_the_same_codebook_shape(tmp_path):
    from singer_rec.training.rl import retarget_model_folder

    sft_path, _ = tiny_world.write(tmp_path / "inputs")
    other = pd.DataFrame({"item_id": ["x1", "x2"], "sid": ["<a_0><b_1><c_2>", "<a_9><b_1><c_2>"]})
    items = pd.DataFrame({"item_id": ["x1", "x2"], "title": ["One", "Two"]})
    with pytest.raises(ValueError, match=r"lacks 1 SID token\(s\) of the new catalog \(e.g. \['<a_9>'\]\)"):
        retarget_model_folder(sft_path, items, other, tmp_path / "moved")
    assert not (tmp_path / "moved").exists()
    folder = retarget_model_folder(sft_path, items, other.iloc[:1], tmp_path / "moved")
    meta = modeling.read_meta(folder)
    assert meta["sid_map"] == {"x1": "<a_0><b_1><c_2>"} and meta["titles"] == {"x1": "One", "x2": "Two"}
    assert meta["unseen_domain"]["trained_items"] == 64


def test_project_ablation_conf_resolves_and_is_mlflow_safe():
    """Every variant of conf/base resolves to valid settings, and the hook can log the parameters
    (MLflow keys allow only alphanumerics, _ - . space : /)."""
    import re

    from kedro.config import OmegaConfigLoader

    from singer_rec.tracking import flatten

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="base")["parameters"]
    ablations = params["ablations"]
    resolved = variant_settings(list(ablations["definitions"]), ablations["definitions"], params["rl"], params["seed"], 10_000)
    assert set(resolved) == set(ablations["definitions"]) and resolved["sft-only"] is None
    assert resolved["acc-rank"]["reward"] == "acc+rank" and resolved["align-rl"]["alignment"] == "rl"
    # the two variants the paper does not have: the paper's rule against this project's default each
    assert (resolved["singer"]["title_reward"], resolved["title-acc-rank"]["title_reward"]) == ("prefix-share", "acc-rank")
    assert (resolved["singer"]["guide_depth"], resolved["guide-items"]["guide_depth"]) == ("schedule", "items")
    for key in flatten(params["ablations"], "ablations") | flatten(params["rl"], "rl") | flatten(params["unseen_domain"], "unseen_domain"):
        assert re.fullmatch(r"[\w\-. :/]+", key), key
