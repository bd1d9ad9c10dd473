"""The recommender as an MLflow ``PythonModel``: item-id/title histories in, ranked items out.

``SingerRecModel`` wraps :class:`singer_rec.recommend.SidRecommender` (the semantic prompt and
the trie-constrained beam search of the evaluate stage). It is logged as code
(``pyfunc_model.py``) with the model folder as its one artifact, ``model_folder``; nothing is
pickled. Its ``model_config`` (defaults in :data:`DEFAULT_CONFIG`) sets the device, the beam
width, the default ``k`` and the largest batch; ``mlflow models serve`` can override it through
``SERVING_MODEL_CONFIG`` (a JSON object).
"""
from __future__ import annotations

import logging
from typing import Any

import mlflow.pyfunc
import pandas as pd

from singer_rec.serving.schema import RequestError, ServingError, internal_error, parse_requests, response_frame

logger = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "device": "cpu",         # cpu | cuda | cuda:N | auto
    "autocast": "off",       # off | bf16 | auto (bf16 on a GPU that supports it)
    "num_beams": 20,         # beam width: the largest k a request may ask for
    "default_k": 10,         # k of a request that gives none
    "max_batch": 64,         # requests per call
    "batch_size": 32,        # prompts decoded together
    "template_index": 0,     # the folder's semantic template (as in params:evaluate)
    "history_length": 10,    # the last N items of a history are shown to the model
    "num_threads": None,     # torch CPU threads (None: torch's default)
}


def model_config(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_CONFIG`` updated with ``overrides``; unknown keys and impossible values raise ValueError."""
    config = dict(DEFAULT_CONFIG)
    unknown = sorted(set(overrides or {}) - set(config))
    if unknown:
        raise ValueError(f"model_config: unknown key(s) {unknown}; known: {sorted(config)}")
    config.update(overrides or {})
    for key in ("num_beams", "default_k", "max_batch", "batch_size"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"model_config.{key} must be a positive integer, got {config[key]!r}")
    if config["default_k"] > config["num_beams"]:
        raise ValueError(f"model_config.default_k={config['default_k']} exceeds num_beams={config['num_beams']}")
    return config


class SingerRecModel(mlflow.pyfunc.PythonModel):
    """Top-k next items for each request row (``singer_rec.serving.schema`` has the layout)."""

    def __init__(self) -> None:
        self.recommender = None
        self.config: dict[str, Any] = dict(DEFAULT_CONFIG)

    def load_context(self, context) -> None:
        import torch

        from singer_rec.recommend import SidRecommender
        from singer_rec.training import common

        self.config = model_config(getattr(context, "model_config", None))
        if self.config["num_threads"]:
            torch.set_num_threads(int(self.config["num_threads"]))
        device = common.resolve_device(self.config["device"], "model_config.device")
        self.autocast = common.autocast_dtype(device, self.config["autocast"])
        self.recommender = SidRecommender.from_folder(
            context.artifacts["model_folder"], device=str(device), template_index=self.config["template_index"],
            history_length=self.config["history_length"])
        logger.info("SINGER recommender loaded on %s: %d items, beam width %d", device,
                    len(self.recommender.item_ids), self.config["num_beams"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        config, recommender = self.config, self.recommender
        try:
            requests = parse_requests(model_input, config["default_k"], config["num_beams"], config["max_batch"])
            histories = []
            for row, request in enumerate(requests):
                try:
                    histories.append(recommender.resolve_items(request.history))
                except ValueError as err:
                    raise RequestError(f"request {row}: {err}") from err
            items, scores = recommender.recommend(histories, k=max(r.k for r in requests),
                                                  num_beams=config["num_beams"], batch_size=config["batch_size"],
                                                  autocast_dtype=self.autocast, where="request")
        except ServingError:
            raise
        except Exception as err:  # never a traceback in the response: one line, the log has the rest
            logger.exception("SINGER recommender: prediction failed")
            raise internal_error(err) from err
        return response_frame(requests, items, scores, recommender.titles, recommender.sid_map)
