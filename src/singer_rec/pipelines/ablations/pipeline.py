from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.ablations import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Studies, not in the default run: ``kedro run --pipeline=ablations --tags=ablations`` (Fig. 4
    variants) and ``--tags=unseen_domain`` (a model trained on another domain, evaluated here)."""
    return Pipeline(
        [
            Node(
                nodes.run_ablations,
                ["sft_model", "sft_dataset_train", "sft_dataset_valid", "rl_dataset", "items", "item_sids",
                 "test_sequences", "params:ablations", "params:rl", "params:sft", "params:prompts",
                 "params:evaluate", "params:seed"],
                ["ablation_table", "ablation_table_markdown"],
                name="run_ablations",
                tags=["ablations", "eval"],
            ),
            Node(
                nodes.evaluate_unseen_domain,
                ["items", "item_sids", "test_sequences", "params:unseen_domain", "params:evaluate"],
                "unseen_domain_metrics",
                name="evaluate_unseen_domain",
                tags=["unseen_domain", "eval"],
            ),
        ]
    )
