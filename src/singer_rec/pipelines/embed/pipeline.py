from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.embed import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [Node(nodes.embed_items, ["items", "params:embed"], "item_embeddings", name="embed_items", tags=["embed"])]
    )
