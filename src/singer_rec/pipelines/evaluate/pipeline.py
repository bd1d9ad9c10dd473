"""Two namespaced copies of one evaluation pipeline: ``sft`` (on ``sft_model``) and ``rl`` (on ``rl_model``).

Run one with ``kedro run --pipelines=evaluate --namespaces=sft``. After its test evaluation each
copy logs its model as an MLflow pyfunc model and registers it (``log_serving_model``, docs/serving.md).
"""
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline, pipeline

from singer_rec.pipelines.evaluate import nodes

MODELS = {"sft": "sft_model", "rl": "rl_model"}


def evaluation_pipeline() -> Pipeline:
    """The stage for one model folder (input ``model_folder``); outputs are namespaced by the caller."""
    return Pipeline(
        [
            Node(nodes.evaluate_test, ["model_folder", "test_sequences", "params:evaluate"],
                 ["test_predictions", "test_metrics"], name="evaluate_test", tags=["evaluate", "eval"]),
            Node(nodes.evaluate_valid, ["model_folder", "valid_sequences", "params:evaluate"],
                 "valid_metrics", name="evaluate_valid", tags=["evaluate", "eval"]),
            Node(nodes.build_report,
                 ["model_folder", "test_sequences", "test_predictions", "test_metrics", "valid_metrics"],
                 ["report_markdown", "hit_rank_plot", "hr_by_history_plot", "sid_depth_plot"],
                 name="evaluation_report", tags=["evaluate"]),
        ]
    )


def serving_pipeline(name: str) -> Pipeline:
    """Log and register the model folder of namespace ``name`` (after its test evaluation)."""
    log = update_wrapper(partial(nodes.log_serving_model, name), nodes.log_serving_model)
    return Pipeline([Node(log, ["model_folder", "test_metrics", "params:evaluate", "params:serving"], None,
                          name="log_serving_model", tags=["evaluate", "eval", "serving"])])


def create_pipeline(**kwargs) -> Pipeline:
    return sum(
        (
            pipeline(evaluation_pipeline() + serving_pipeline(name), namespace=name,
                     inputs={"model_folder": model, "test_sequences": "test_sequences",
                             "valid_sequences": "valid_sequences"},
                     parameters={"params:evaluate": "params:evaluate", "params:serving": "params:serving"})
            for name, model in MODELS.items()
        ),
        Pipeline([]),
    )
