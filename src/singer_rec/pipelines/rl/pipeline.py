from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.rl import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.train_rl_model,
                ["sft_model", "rl_dataset", "sft_dataset_valid", "items", "item_sids", "params:rl", "params:prompts", "params:seed"],
                ["rl_model", "rl_report", "rl_history"],
                name="train_rl_model",
                # `train`: the MLflow hook opens a child run; the training process logs per-step metrics into it
                tags=["rl", "train"],
            ),
            Node(
                nodes.plot_reward_distribution,
                "rl_history",
                "rl_reward_plot",
                name="plot_rl_reward_distribution",
                tags=["rl"],
            ),
            Node(nodes.plot_training_curves, "rl_history", "rl_curves_plot", name="plot_rl_training_curves",
                 tags=["rl"]),
        ]
    )
