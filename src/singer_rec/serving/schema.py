"""The served recommender's request and response layout, and its request checks.

A request is one row: ``history`` (the user's items, oldest first: item ids or exact titles) and
an optional ``k`` (how many items to return; the model's ``default_k`` when absent). A response
has one row per (request, rank): ``request`` (the request's row number, from 0), ``rank`` (from
1, best first), ``item_id``, ``title``, ``sid`` and ``score`` (the item's sequence log-prob).

Every bad request raises :class:`RequestError`, which MLflow's scoring server answers with HTTP
400 and a JSON body whose ``message`` is one line naming the request row and what is wrong.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, Array, ColSpec, Schema

OUTPUT_COLUMNS = ("request", "rank", "item_id", "title", "sid", "score")


class ServingError(MlflowException):
    """An MlflowException whose message stays the one line it was created with.

    MLflow's scoring server rewrites the message of an exception raised by ``predict`` to
    ``Failed to predict data '<the whole input>'. \\nError: <message>`` (several lines that repeat
    the request). Assignments to ``message`` after creation are ignored, so the response body
    carries only the one line that says what is wrong. No stack trace is attached.
    """

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE) -> None:
        self._line = " ".join(str(message).split()) or type(self).__name__
        super().__init__(self._line, error_code=error_code)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:  # the server's prefixed copy of the input: dropped
        pass


class RequestError(ServingError):
    """A bad request: HTTP 400 (``INVALID_PARAMETER_VALUE``) with a one-line message."""


def internal_error(err: BaseException) -> ServingError:
    """An unexpected failure as HTTP 500 with one line (the traceback goes to the server's log only)."""
    first = (str(err).strip().splitlines() or [""])[0]
    return ServingError(f"internal error: {type(err).__name__}: {first}"[:400], error_code=INTERNAL_ERROR)


@dataclass(frozen=True)
class Request:
    history: list[str]  # entries as given (item ids or titles), blanks dropped
    k: int


def signature() -> ModelSignature:
    """``history`` is an array of strings; ``k`` is any (checked here, so a bad ``k`` gets this module's message)."""
    inputs = Schema([ColSpec(Array("string"), "history"), ColSpec(AnyType(), "k", required=False)])
    outputs = Schema([ColSpec("long", "request"), ColSpec("long", "rank"), ColSpec("string", "item_id"),
                      ColSpec("string", "title"), ColSpec("string", "sid"), ColSpec("double", "score")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(item_ids: Sequence[str], k: int = 5) -> pd.DataFrame:
    """One request on the first three items of the model's SID map (real ids)."""
    return pd.DataFrame({"history": [list(item_ids[:3])], "k": [int(k)]})


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _k(value: Any, row: int, default_k: int, max_k: int) -> int:
    if _missing(value):
        return default_k
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
            or float(value) != int(value)):
        raise RequestError(f"request {row}: k must be a whole number from 1 to {max_k}, got {value!r}")
    k = int(value)
    if not 1 <= k <= max_k:
        raise RequestError(f"request {row}: k={k} is out of range: use 1 to {max_k} (the beam width)")
    return k


def _history(value: Any, row: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if _missing(value) or not isinstance(value, (list, tuple)):
        raise RequestError(f"request {row}: history must be a list of item ids or titles, got {value!r:.80}")
    bad = next((v for v in value if not isinstance(v, str)), None)
    if bad is not None:
        raise RequestError(f"request {row}: history entries must be strings (item ids or titles), got {bad!r:.80}")
    entries = [v for v in value if v.strip()]
    if not entries:
        raise RequestError(f"request {row}: history is empty: give the user's items (ids or titles), oldest first")
    return entries


def _rows(model_input: Any) -> list[Mapping[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, Mapping):  # columns: {"history": [[...], ...], "k": [...]}
        if "history" not in model_input:
            raise RequestError("the input has no 'history' column")
        histories = list(model_input["history"])
        ks = model_input.get("k")
        ks = list(ks) if isinstance(ks, (list, tuple, np.ndarray, pd.Series)) else [ks] * len(histories)
        if len(ks) != len(histories):
            raise RequestError(f"'k' has {len(ks)} values for {len(histories)} histories")
        return [{"history": h, "k": k} for h, k in zip(histories, ks)]
    if isinstance(model_input, (list, tuple)) and all(isinstance(r, Mapping) for r in model_input):
        return list(model_input)
    raise RequestError(f"expected a table with a 'history' column (and optionally 'k'), got {type(model_input).__name__}")


def parse_requests(model_input: Any, default_k: int, max_k: int, max_batch: int) -> list[Request]:
    """The requests of a table (DataFrame, records or columns); the first problem raises :class:`RequestError`."""
    rows = _rows(model_input)
    if not rows:
        raise RequestError("no requests: send at least one row with a 'history'")
    if len(rows) > max_batch:
        raise RequestError(f"{len(rows)} requests in one call: at most {max_batch} (max_batch); split the batch")
    requests = []
    for row, record in enumerate(rows):
        unknown = sorted(set(record) - {"history", "k"})
        if unknown:
            raise RequestError(f"request {row}: unknown field(s) {unknown}; expected 'history' and optionally 'k'")
        if "history" not in record:
            raise RequestError(f"request {row}: no 'history'")
        requests.append(Request(_history(record["history"], row), _k(record.get("k"), row, default_k, max_k)))
    return requests


def response_frame(requests: Sequence[Request], items: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
                   titles: Mapping[str, str], sids: Mapping[str, str]) -> pd.DataFrame:
    """One row per (request, rank), the first ``k`` of each request's ranked items."""
    rows = [(r, rank, item, titles.get(item, ""), sids[item], float(score))
            for r, (request, ranked, logps) in enumerate(zip(requests, items, scores))
            for rank, (item, score) in enumerate(zip(ranked[:request.k], logps[:request.k]), start=1)]
    frame = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    return frame.astype({"request": "int64", "rank": "int64", "item_id": str, "title": str, "sid": str,
                         "score": "float64"})
