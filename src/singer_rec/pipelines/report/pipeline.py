from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.report import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            nodes.build_report,
            # the producing stages' own datasets (optional: None while a stage has not run)
            {"baseline_metrics": "baseline_metrics", "sft_metrics": "sft.test_metrics", "rl_metrics": "rl.test_metrics",
             "params": "params:report", "paper_table1": "params:paper_table1",
             "llm_baseline_metrics": "llm_baseline_metrics", "sdpo_metrics": "sdpo_metrics",
             "minionerec_metrics": "minionerec.test_metrics"},  # the ablations' minionerec variant
            ["results_table", "results_markdown", "results_chart"],
            name="build_report",
        )
    ])
