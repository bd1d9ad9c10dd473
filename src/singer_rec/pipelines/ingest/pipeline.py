from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.ingest import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.ingest,
                ["raw_files", "params:seed", "params:ingest"],
                ["items", "interactions", "given_sequences"],
                name="ingest",
            )
        ]
    )
