from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.report import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            nodes.build_report,
            ["report_baseline_metrics", "report_sft_metrics", "report_rl_metrics", "params:report",
             "params:paper_table1"],
            ["results_table", "results_markdown", "results_chart"],
            name="build_report",
        )
    ])
