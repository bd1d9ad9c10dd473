from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.split import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.split_sequences,
                ["items", "interactions", "given_sequences", "params:split"],
                ["train_sequences", "valid_sequences", "test_sequences", "split_stats"],
                name="split",
            )
        ]
    )
