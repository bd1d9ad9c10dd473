from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.prompts import nodes

COMMON = ["items", "item_sids"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.build_sft_train, [*COMMON, "train_sequences", "params:prompts", "params:seed"],
                 "sft_dataset_train", name="build_sft_train", tags=["prompts"]),
            Node(nodes.build_sft_valid, [*COMMON, "valid_sequences", "params:prompts", "params:seed"],
                 "sft_dataset_valid", name="build_sft_valid", tags=["prompts"]),
            Node(nodes.build_rl_dataset, [*COMMON, "train_sequences", "params:prompts", "params:seed"],
                 "rl_dataset", name="build_rl_dataset", tags=["prompts"]),
        ]
    )
