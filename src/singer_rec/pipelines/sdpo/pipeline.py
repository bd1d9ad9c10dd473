from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.sdpo import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_sdpo_model,
                 ["sft_model", "sft_dataset_train", "sft_dataset_valid", "params:sdpo", "params:seed"],
                 ["sdpo_model", "sdpo_report"], name="train_sdpo_model",
                 # `train`: the MLflow hook opens a child run; the training process logs into it
                 tags=["sdpo", "train"]),
            Node(nodes.evaluate_sdpo_model, ["sdpo_model", "test_sequences", "params:evaluate"],
                 "sdpo_metrics", name="evaluate_sdpo_model", tags=["sdpo", "eval"]),
        ]
    )
