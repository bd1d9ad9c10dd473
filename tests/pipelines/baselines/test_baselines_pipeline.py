"""The baselines pipeline on an in-memory catalog with the real runner, and the project's conf."""
from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from singer_rec.baselines.toy import rule_tables
from singer_rec.baselines.tiger import TigerConfig
from singer_rec.baselines.training import TrainConfig
from singer_rec.pipelines.baselines import create_pipeline
from singer_rec.pipelines.baselines.nodes import METRIC_COLUMNS, collect_baseline_metrics

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TINY_PARAMS = {
    "max_history": 6,
    "num_threads": 1,
    "training": {"batch_size": 256, "max_epochs": 15, "patience": 2, "learning_rates": [1e-2],
                 "weight_decays": [1e-6], "time_budget_s": 60},
    "gru4rec": {"model": {"dim": 32}},
    "caser": {"model": {"dim": 32, "window": 6}},
    "sasrec": {"model": {"dim": 32}, "training": {"loss": "ce"}},
    "hstu": {"model": {"dim": 32}},
    "tiger": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4, "max_epochs": 25,
              "patience": 3, "batch_size": 128, "learning_rate": 3.0e-3},
}


def test_pipeline_trains_every_baseline_and_collects_the_table(tmp_path):
    item_ids, train, valid, test = rule_tables(num_items=40, num_users=200, max_len=6)
    catalog = DataCatalog({
        "items": MemoryDataset(pd.DataFrame({"item_id": item_ids})),
        "item_sids": MemoryDataset(pd.DataFrame({"item_id": item_ids, "codes": [[i // 8, i % 8] for i in range(40)]})),
        "train_sequences": MemoryDataset(train),
        "valid_sequences": MemoryDataset(valid),
        "test_sequences": MemoryDataset(test),
        "params:baselines": MemoryDataset(TINY_PARAMS),
        "params:seed": MemoryDataset(7),
        "baseline_sasrec_metrics": JSONDataset(filepath=str(tmp_path / "sasrec_metrics.json")),
    })
    pipeline = create_pipeline()
    assert {n.name for n in pipeline.nodes if "train" in n.tags} == {
        "train_popularity", "train_markov", "train_gru4rec", "train_caser", "train_sasrec", "train_hstu", "train_tiger"}
    SequentialRunner().run(pipeline, catalog)
    table = catalog["baseline_metrics"].load()
    assert table["method"].tolist() == ["Popularity", "Markov chain", "GRU4Rec", "Caser", "SASRec", "HSTU", "TIGER"]
    assert list(table.columns) == ["method", *METRIC_COLUMNS, "n", "wall_time_s"]
    assert (table["n"] == 200).all()
    popularity = table.set_index("method").loc["Popularity", "HR@10"]
    for method in ["Markov chain", "GRU4Rec", "Caser", "SASRec", "HSTU", "TIGER"]:
        assert table.set_index("method").loc[method, "HR@10"] >= 0.9 > popularity + 0.5
    sasrec = catalog["baseline_sasrec_metrics"].load()
    assert sasrec["learning_rate"] == 1e-2 and sasrec["grid_points_tried"] == 1
    assert sasrec["HR@10"] == table.set_index("method").loc["SASRec", "HR@10"]


def test_collect_keeps_order_and_names():
    m = {c: 0.5 for c in METRIC_COLUMNS} | {"n": 3, "wall_time_s": 1.5}
    table = collect_baseline_metrics(sasrec_metrics=m, popularity_metrics={**m, "HR@3": 0.25})
    assert table.to_csv(index=False) == (
        "method,HR@3,NDCG@3,HR@5,NDCG@5,HR@10,NDCG@10,n,wall_time_s\n"
        "SASRec,0.5,0.5,0.5,0.5,0.5,0.5,3,1.5\n"
        "Popularity,0.25,0.5,0.5,0.5,0.5,0.5,3,1.5\n")


def test_project_conf_parses_into_valid_settings_and_catalog_entries():
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="base")
    params = loader["parameters"]
    baselines = params["baselines"]
    TigerConfig(**baselines["tiger"])
    for name in ["gru4rec", "caser", "sasrec", "hstu"]:
        config = TrainConfig(**{**baselines["training"], **baselines[name].get("training", {})})
        # chosen on valid NDCG@10 on Industrial (docs/baselines.md), not the paper's batch 1024 / BCE
        assert (config.batch_size, config.loss, config.positions, config.patience) == (128, "ce", "last", 15)
    assert set(params["report"]["include"]) == {"baselines", "llm_baselines", "sdpo", "sft", "rl", "minionerec"}
    catalog = DataCatalog.from_config(loader["catalog"])
    for name in ["baseline_metrics", "baseline_sasrec_metrics", "sft.test_metrics", "minionerec.test_metrics", "results_markdown"]:
        assert name in catalog, name
    assert catalog["rl.test_metrics"].load() is None or isinstance(catalog["rl.test_metrics"].load(), dict)


def test_device_auto_on_a_cpu_trains_exactly_as_cpu(monkeypatch):
    """``baselines.device: auto`` (the default) without CUDA is the CPU: the same metrics, bit for bit."""
    import torch

    from singer_rec.pipelines.baselines.nodes import sequential_node, train_tiger

    train_gru4rec = sequential_node("gru4rec")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    item_ids, train, valid, test = rule_tables(num_items=20, num_users=60, max_len=5)
    items = pd.DataFrame({"item_id": item_ids})
    sids = pd.DataFrame({"item_id": item_ids, "codes": [[i // 5, i % 5] for i in range(20)]})
    short = {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_epochs": 2},
             "tiger": {**TINY_PARAMS["tiger"], "max_epochs": 1, "hidden_size": 32, "intermediate_size": 64}}
    runs = {}
    for device in ("auto", "cpu"):
        params = {**short, "device": device}
        gru = train_gru4rec(items, train, valid, test, params, 3)
        tiger = train_tiger(sids, train, valid, test, params, 3)
        runs[device] = [{k: v for k, v in m.items() if k != "wall_time_s"} for m in (gru, tiger)]
    assert runs["auto"] == runs["cpu"]
    with pytest.raises(ValueError, match=r"baselines\.device is 'cuda', but CUDA is not available"):
        train_gru4rec(items, train, valid, test, {**short, "device": "cuda"}, 3)
