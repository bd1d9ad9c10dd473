"""The report built from fixed inputs equals the expected table, with and without optional inputs."""
import json

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from singer_rec.datasets.optional import OptionalDataset
from singer_rec.pipelines.report import create_pipeline
from singer_rec.baselines.report import METRICS
from singer_rec.pipelines.report.nodes import build_report

BASELINES = pd.DataFrame([
    {"method": "SASRec", "HR@3": 0.05, "NDCG@3": 0.04, "HR@5": 0.06, "NDCG@5": 0.045, "HR@10": 0.1, "NDCG@10": 0.07, "n": 10, "wall_time_s": 3.0},
    {"method": "Popularity", "HR@3": 0.045, "NDCG@3": 0.039, "HR@5": 0.053, "NDCG@5": 0.042, "HR@10": 0.061, "NDCG@10": 0.045, "n": 10, "wall_time_s": 0.1},
    {"method": "MyNew", "HR@3": 0.01, "NDCG@3": 0.01, "HR@5": 0.01, "NDCG@5": 0.01, "HR@10": 0.01, "NDCG@10": 0.01, "n": 10, "wall_time_s": 0.1},
])
SFT = {"HR@3": 0.07, "NDCG@3": 0.06, "HR@5": 0.08, "NDCG@5": 0.065, "HR@10": 0.11, "NDCG@10": 0.075, "n": 10,
       "wall_time_s": 250.0}
PARAMS = {
    "title": "Industrial (partial train)",
    "include": ["baselines", "sft", "rl"],
    "model_names": {"baselines": "baselines", "sft": "SINGER-SFT", "rl": "SINGER"},
    "groups": {"Traditional": ["Popularity", "GRU4Rec", "SASRec"], "Ours": ["SINGER-SFT", "SINGER"]},
    "anchors_dataset": "Industrial",
}
PAPER = {"Industrial": {"Traditional": {"SASRec": [0.0790, 0.0700, 0.0909, 0.0748, 0.1088, 0.0806]},
                        "Ours": {"SINGER": [0.1256, 0.1112, 0.1453, 0.1192, 0.1744, 0.1276]}}}

EXPECTED_MARKDOWN = """# Results: Industrial (partial train)

Our runs: the same train/valid/test splits and the same metric code for every method (HR@K, NDCG@K at item level over the full item set); wall s = the method's training + test time where it is recorded. Best value per column in bold; 'not run' = no result in this run.

| Group | Method | HR@3 | NDCG@3 | HR@5 | NDCG@5 | HR@10 | NDCG@10 | wall s | paper HR@10 | paper NDCG@10 |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| Traditional | Popularity | 0.0450 | 0.0390 | 0.0530 | 0.0420 | 0.0610 | 0.0450 | 0.1 |  |  |
|  | GRU4Rec | not run |  |  |  |  |  |  |  |  |
|  | SASRec | 0.0500 | 0.0400 | 0.0600 | 0.0450 | 0.1000 | 0.0700 | 3.0 | 0.1088 | 0.0806 |
| Ours | SINGER-SFT | **0.0700** | **0.0600** | **0.0800** | **0.0650** | **0.1100** | **0.0750** | 250 |  |  |
|  | SINGER | not run |  |  |  |  |  |  | 0.1744 | 0.1276 |
| Other | MyNew | 0.0100 | 0.0100 | 0.0100 | 0.0100 | 0.0100 | 0.0100 | 0.1 |  |  |

Not in this run (input absent): SINGER.

## Published numbers: paper Table 1, Industrial

Trained on the full MiniOneRec train split (the data here holds only part of it): a reference for the ordering of methods, not comparable in absolute terms.

| Group | Method | HR@3 | NDCG@3 | HR@5 | NDCG@5 | HR@10 | NDCG@10 |
|---|---|---:|---:|---:|---:|---:|---:|
| Traditional | SASRec | 0.0790 | 0.0700 | 0.0909 | 0.0748 | 0.1088 | 0.0806 |
| Ours | SINGER | **0.1256** | **0.1112** | **0.1453** | **0.1192** | **0.1744** | **0.1276** |
"""

EXPECTED_CSV = """group,method,status,HR@3,NDCG@3,HR@5,NDCG@5,HR@10,NDCG@10,wall_time_s,paper HR@3,paper NDCG@3,paper HR@5,paper NDCG@5,paper HR@10,paper NDCG@10
Traditional,Popularity,run,0.045,0.039,0.053,0.042,0.061,0.045,0.1,,,,,,
Traditional,GRU4Rec,not run,,,,,,,,,,,,,
Traditional,SASRec,run,0.05,0.04,0.06,0.045,0.1,0.07,3.0,0.079,0.07,0.0909,0.0748,0.1088,0.0806
Ours,SINGER-SFT,run,0.07,0.06,0.08,0.065,0.11,0.075,250.0,,,,,,
Ours,SINGER,not run,,,,,,,,0.1256,0.1112,0.1453,0.1192,0.1744,0.1276
Other,MyNew,run,0.01,0.01,0.01,0.01,0.01,0.01,0.1,,,,,,
"""


def test_report_from_fixed_inputs_equals_expected_table():
    table, markdown, figure = build_report(BASELINES, SFT, None, PARAMS, PAPER)
    assert markdown == EXPECTED_MARKDOWN
    assert table.to_csv(index=False) == EXPECTED_CSV
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["Popularity", "SASRec", "SINGER-SFT", "MyNew"]


def test_report_with_only_model_metrics_and_no_anchors():
    params = {**PARAMS, "anchors_dataset": None, "include": ["sft", "rl"]}
    table, markdown, _ = build_report(BASELINES, SFT, {**SFT, "HR@3": 0.2}, params, PAPER)
    assert table["method"].tolist() == ["Popularity", "GRU4Rec", "SASRec", "SINGER-SFT", "SINGER"]
    assert table["status"].tolist() == ["not run"] * 3 + ["run"] * 2
    assert "Published numbers" not in markdown and "Not in this run" not in markdown and "paper HR@10" not in markdown
    assert "| Traditional | Popularity | not run |  |" in markdown
    assert "| Ours | SINGER-SFT | 0.0700 |" in markdown and "|  | SINGER | **0.2000** |" in markdown


def test_table1_appends_anchored_methods_the_groups_leave_out_and_rejects_repeats():
    from singer_rec.baselines.report import table1

    anchors = {"Generative": {"HSTU": [0.1] * 6}, "Traditional": {"SASRec": [0.2] * 6}}
    table = table1([{"method": "SASRec", **dict.fromkeys(METRICS, 0.3), "wall_time_s": 5.0}],
                   {"Traditional": ["SASRec"]}, anchors)
    assert table[["group", "method", "status"]].values.tolist() == [["Traditional", "SASRec", "run"],
                                                                    ["Generative", "HSTU", "not run"]]
    assert table["paper HR@10"].tolist() == [0.2, 0.1] and table["wall_time_s"].iloc[0] == 5.0
    with pytest.raises(ValueError, match="lists a method twice"):
        table1([], {"A": ["SASRec"], "B": ["SASRec"]})


def test_report_errors():
    with pytest.raises(ValueError, match="none of the included inputs"):
        build_report(None, None, None, PARAMS, PAPER)
    with pytest.raises(ValueError, match=r"SINGER-SFT test metrics: missing metric\(s\) \['NDCG@10'\]"):
        build_report(None, {k: v for k, v in SFT.items() if k != "NDCG@10"}, None, PARAMS, PAPER)
    with pytest.raises(ValueError, match=r"report.include: unknown input\(s\) \['ablations'\]"):
        build_report(BASELINES, None, None, {**PARAMS, "include": ["ablations"]}, PAPER)


def test_report_pipeline_runs_with_absent_optional_inputs(tmp_path):
    """Real runner; sft metrics from a json file, rl metrics file absent -> OptionalDataset loads None."""
    (tmp_path / "sft.json").write_text(json.dumps(SFT))
    catalog = DataCatalog({
        "baseline_metrics": MemoryDataset(BASELINES),
        "sft.test_metrics": OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / "sft.json")}),
        "rl.test_metrics": OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / "absent.json")}),
        "llm_baseline_metrics": OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / "no_llm.json")}),
        "sdpo_metrics": OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / "no_sdpo.json")}),
        "minionerec.test_metrics": OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / "no.json")}),
        "params:report": MemoryDataset(PARAMS),
        "params:paper_table1": MemoryDataset(PAPER),
        "results_table": MemoryDataset(),
        "results_markdown": MemoryDataset(),
        "results_chart": MemoryDataset(copy_mode="assign"),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    assert catalog["results_markdown"].load() == EXPECTED_MARKDOWN
    assert catalog["results_table"].load().to_csv(index=False) == EXPECTED_CSV


def _row(value: float, wall: float) -> dict:
    return {**dict.fromkeys(METRICS, value), "n": 10, "wall_time_s": wall}


def test_llm_baseline_and_sdpo_json_fill_their_rows_and_an_absent_one_is_named(tmp_path):
    """llm_baseline_metrics / sdpo_metrics ({method: metrics}, as their pipelines write them) fill the
    LLM-based rows; through the real runner, an absent sdpo file reads None and is named."""
    llm = {"BIGRec": _row(0.2, 30.0), "BIGRec (title-constrained)": _row(0.3, 31.0), "D3": _row(0.4, 32.0)}
    (tmp_path / "llm.json").write_text(json.dumps(llm))
    params = {**PARAMS, "include": ["baselines", "llm_baselines", "sdpo", "sft"], "anchors_dataset": None,
              "model_names": {**PARAMS["model_names"], "sdpo": "S-DPO"},
              "groups": {"Traditional": ["SASRec"], "LLM-based": ["BIGRec", "BIGRec (title-constrained)", "D3", "S-DPO"]}}
    optional = lambda name: OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / name)})  # noqa: E731
    catalog = DataCatalog({
        "baseline_metrics": MemoryDataset(BASELINES.iloc[:1]), "sft.test_metrics": optional("absent_sft.json"),
        "rl.test_metrics": optional("absent_rl.json"), "minionerec.test_metrics": optional("absent_minionerec.json"),
        "llm_baseline_metrics": optional("llm.json"),
        "sdpo_metrics": optional("sdpo.json"), "params:report": MemoryDataset(params),
        "params:paper_table1": MemoryDataset(PAPER), "results_table": MemoryDataset(),
        "results_markdown": MemoryDataset(), "results_chart": MemoryDataset(copy_mode="assign"),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    table, markdown = catalog["results_table"].load(), catalog["results_markdown"].load()
    assert table[["group", "method", "status", "HR@10", "wall_time_s"]].fillna(-1).values.tolist() == [
        ["Traditional", "SASRec", "run", 0.1, 3.0], ["LLM-based", "BIGRec", "run", 0.2, 30.0],
        ["LLM-based", "BIGRec (title-constrained)", "run", 0.3, 31.0], ["LLM-based", "D3", "run", 0.4, 32.0],
        ["LLM-based", "S-DPO", "not run", -1, -1]]
    assert "Not in this run (input absent): S-DPO, SINGER-SFT." in markdown
    (tmp_path / "sdpo.json").write_text(json.dumps({"S-DPO": _row(0.5, 40.0)}))
    SequentialRunner().run(create_pipeline(), catalog)
    table = catalog["results_table"].load()
    assert table.set_index("method").loc["S-DPO", ["status", "NDCG@10"]].tolist() == ["run", 0.5]
    assert "|  | D3 | 0.4000 |" in catalog["results_markdown"].load()


def test_the_minionerec_variant_fills_the_minionerec_row_and_is_named_when_absent():
    params = {**PARAMS, "include": ["sft", "rl", "minionerec"], "anchors_dataset": None,
              "model_names": {**PARAMS["model_names"], "minionerec": "MiniOneRec"},
              "groups": {"LLM-based": ["MiniOneRec"], "Ours": ["SINGER-SFT", "SINGER"]}}
    table, markdown, _ = build_report(None, SFT, {**SFT, "HR@10": 0.2}, params, PAPER, minionerec_metrics=_row(0.15, 9.0))
    assert table[["method", "HR@10", "wall_time_s"]].values.tolist() == [
        ["MiniOneRec", 0.15, 9.0], ["SINGER-SFT", 0.11, 250.0], ["SINGER", 0.2, 250.0]]
    _, markdown, _ = build_report(None, SFT, None, params, PAPER)
    assert "Not in this run (input absent): SINGER, MiniOneRec." in markdown


def test_method_json_must_map_methods_to_metric_mappings():
    from singer_rec.pipelines.report.nodes import method_table

    assert method_table([{"method": "D3", **_row(0.1, 1.0)}], "x")["method"].tolist() == ["D3"]
    with pytest.raises(ValueError, match="sdpo_metrics: expected .* the entry of 'HR@3' is not a mapping"):
        build_report(None, None, None, {**PARAMS, "include": ["sdpo"]}, PAPER, sdpo_metrics=_row(0.1, 1.0))
    with pytest.raises(ValueError, match=r"sdpo_metrics: 'S-DPO' lacks metric\(s\) \['NDCG@3', 'HR@5'"):
        build_report(None, None, None, {**PARAMS, "include": ["sdpo"]}, PAPER, sdpo_metrics={"S-DPO": {"HR@3": 0.1}})


def test_paper_table1_in_conf_matches_the_paper_text(project_root):
    """Every anchor number in conf is the paper's Table 1 row (read from the paper's text when present)."""
    import re

    import yaml

    table = yaml.safe_load((project_root / "conf/base/parameters_report.yml").read_text())["paper_table1"]
    assert table["Industrial"]["Ours"]["SINGER"] == [0.1256, 0.1112, 0.1453, 0.1192, 0.1744, 0.1276]
    assert table["Office"]["Traditional"]["SASRec"] == [0.0861, 0.0769, 0.0949, 0.0805, 0.1120, 0.0858]
    paper = project_root.parent / "shared" / "paper" / "singer-paper.txt"
    if not paper.is_file():
        pytest.skip(f"paper text not found at {paper}")
    text = re.sub(r"</?(b|u)>", "", paper.read_text())
    for dataset in ("Industrial", "Office"):
        for methods in table[dataset].values():
            for values in methods.values():
                assert "\t".join(f"{v:.4f}" for v in values) in text, values


def test_optional_dataset_loads_none_until_saved_and_needs_a_type(tmp_path):
    from kedro.io import DatasetError

    dataset = OptionalDataset({"type": "json.JSONDataset", "filepath": str(tmp_path / "x.json")})
    assert dataset.load() is None and not dataset.exists()
    dataset.save({"a": 1})  # writes through: the producing stage and the report share one entry
    assert dataset.exists() and dataset.load() == {"a": 1}
    with pytest.raises(DatasetError, match="needs 'dataset'"):
        OptionalDataset({"filepath": "x.json"})
