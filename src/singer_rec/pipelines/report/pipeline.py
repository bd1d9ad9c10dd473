from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.report import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            nodes.build_report,
            # the producing stages' own datasets (optional: None while a stage has not run)
            ["baseline_metrics", "sft.test_metrics", "rl.test_metrics", "params:report", "params:paper_table1"],
            ["results_table", "results_markdown", "results_chart"],
            name="build_report",
        )
    ])
