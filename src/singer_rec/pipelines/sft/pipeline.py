from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.sft import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.train_sft_model,
                ["sft_dataset_train", "sft_dataset_valid", "items", "item_sids",
                 "params:sft", "params:prompts", "params:seed"],
                ["sft_model", "sft_report"],
                name="train_sft_model",
                # `train`: the MLflow hook opens a child run; the training process logs into it
                tags=["sft", "train"],
            ),
            Node(nodes.plot_training_curves, "sft_model", "sft_curves_plot", name="plot_sft_training_curves",
                 tags=["sft"]),
        ]
    )
