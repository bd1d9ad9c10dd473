from kedro.pipeline import Node, Pipeline

from singer_rec.baselines.models import MODELS
from singer_rec.pipelines.baselines import nodes

SPLITS = ["items", "train_sequences", "valid_sequences", "test_sequences"]


def create_pipeline(**kwargs) -> Pipeline:
    trained = [
        Node(nodes.train_popularity, ["items", "train_sequences", "test_sequences", "params:baselines"],
             "baseline_popularity_metrics", name="train_popularity", tags=["train"]),
        Node(nodes.train_markov, ["items", "train_sequences", "test_sequences", "params:baselines"],
             "baseline_markov_metrics", name="train_markov", tags=["train"]),
    ]
    trained += [
        Node(nodes.sequential_node(name), [*SPLITS, "params:baselines", "params:seed"], f"baseline_{name}_metrics",
             name=f"train_{name}", tags=["train"])
        for name in MODELS
    ]
    trained.append(
        Node(nodes.train_tiger, ["item_sids", *SPLITS[1:], "params:baselines", "params:seed"],
             "baseline_tiger_metrics", name="train_tiger", tags=["train"])
    )
    collect = Node(
        nodes.collect_baseline_metrics,
        {f"{n.name.removeprefix('train_')}_metrics": n.outputs[0] for n in trained},
        "baseline_metrics",
        name="collect_baseline_metrics",
    )
    return Pipeline([*trained, collect])
