from kedro.pipeline import Node, Pipeline

from singer_rec.pipelines.catalog_update import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Not in the default run: ``kedro run --pipelines=catalog_update --params=new_items_path=FILE``."""
    return Pipeline(
        [
            Node(nodes.check_new_items, ["new_items", "items", "params:catalog_update"], "catalog_update_checked_items",
                 name="check_new_items", tags=["catalog_update"]),
            Node(nodes.embed_new_items, ["catalog_update_checked_items", "params:embed"],
                 "catalog_update_new_embeddings", name="embed_new_items", tags=["catalog_update"]),
            Node(nodes.assign_new_items,
                 ["catalog_update_checked_items", "catalog_update_new_embeddings", "items", "item_sids",
                  "sid_codebooks", "params:catalog_update"],
                 ["catalog_update_items", "catalog_update_item_sids", "catalog_update_assignment"],
                 name="assign_new_items", tags=["catalog_update"]),
            Node(nodes.update_model_folders,
                 ["catalog_update_sft_model_in", "catalog_update_rl_model_in", "catalog_update_checked_items",
                  "catalog_update_item_sids", "catalog_update_assignment", "params:catalog_update"],
                 ["catalog_update_sft_model_tmp", "catalog_update_rl_model_tmp", "catalog_update_report_data"],
                 name="update_model_folders", tags=["catalog_update"]),
            Node(nodes.publish,
                 ["catalog_update_items", "catalog_update_item_sids", "item_embeddings",
                  "catalog_update_new_embeddings", "catalog_update_sft_model_tmp", "catalog_update_rl_model_tmp",
                  "catalog_update_report_data"],
                 # saved in this order: new versions first, the unversioned items table last
                 ["catalog_update_updated_sft_model", "catalog_update_updated_rl_model",
                  "catalog_update_updated_item_embeddings", "catalog_update_updated_item_sids",
                  "catalog_update_report", "catalog_update_report_markdown", "catalog_update_updated_items"],
                 name="publish_catalog_update", tags=["catalog_update"]),
        ]
    )
