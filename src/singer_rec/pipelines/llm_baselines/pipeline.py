from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.llm_baselines import nodes

DECODE = ["bigrec_model", "bigrec_test_rows", "items", "item_sids"]
PARAMS = ["params:sft", "params:llm_baselines", "bigrec_train_report"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.build_title_rows,
             ["items", "item_sids", "train_sequences", "valid_sequences", "test_sequences", "params:prompts",
              "params:llm_baselines", "params:seed"],
             ["bigrec_train_rows", "bigrec_valid_rows", "bigrec_test_rows", "bigrec_test_sequences",
              "bigrec_valid_ranked_rows", "bigrec_valid_ranked_sequences"],
             name="build_title_rows"),
        Node(nodes.train_title_model,
             ["bigrec_train_rows", "bigrec_valid_rows", "items", "item_sids", "params:sft", "params:prompts",
              "params:llm_baselines", "params:seed"],
             ["bigrec_model", "bigrec_train_report"], name="train_title_model", tags=["train"]),
        Node(nodes.evaluate_bigrec, [*DECODE, "train_sequences", "params:embed", *PARAMS], "bigrec_metrics",
             name="evaluate_bigrec"),
        Node(nodes.evaluate_bigrec_constrained, [*DECODE, *PARAMS], "bigrec_constrained_metrics",
             name="evaluate_bigrec_constrained"),
        Node(nodes.train_assistant,
             ["items", "train_sequences", "valid_sequences", "bigrec_test_sequences", "bigrec_valid_ranked_sequences",
              "params:baselines",
              "params:llm_baselines", "params:seed"],
             "d3_assistant", name="train_d3_assistant", tags=["train"]),
        Node(nodes.evaluate_d3, [*DECODE, *PARAMS, "d3_assistant", "bigrec_valid_ranked_rows"], "d3_metrics", name="evaluate_d3"),
        Node(nodes.collect_llm_baseline_metrics,
             {f"{m}_metrics": f"{m}_metrics" for m in nodes.METHODS}, "llm_baseline_metrics",
             name="collect_llm_baseline_metrics"),
    ])
