from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.sid import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.build_semantic_ids,
                ["items", "item_embeddings", "params:sid", "params:seed"],
                ["item_sids", "sid_codebooks", "sid_report"],
                name="build_semantic_ids",
                # `train`: the MLflow hook opens a child run and logs sid_report as metrics
                tags=["sid", "train"],
            )
        ]
    )
