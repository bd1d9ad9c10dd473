"""MLflow tracking without a global run stack, and without letting a broken store stop training.

The project hook (``singer_rec.hooks``) opens one parent run per ``kedro run`` and one child run
per tracked node. It publishes the child run through MLflow's own environment variables,
``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID``, so that the node, and any training process the node
spawns, log into the same run with the functions here. Outside a tracked node every function is
a no-op, so the method's code can call them unconditionally.

A store that fails during a run (server gone, sqlite file turned read-only, disk full) never
raises here: the first failure for a run is reported once, as one warning line that starts with
:data:`FAILURE_PREFIX`, and every later call for that run is skipped, so training goes on at full
speed and the node's outputs are still saved. A training process's warning line is recognised by
``singer_rec.training.launch``, which marks the run as failed in the node's process too: one
report per node, however many processes and metrics.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

logger = logging.getLogger(__name__)

RUN_ID_ENV = "MLFLOW_RUN_ID"  # MLflow's standard variables: mlflow's own fluent API honours them too
URI_ENV = "MLFLOW_TRACKING_URI"
MAX_PARAM_CHARS = 6000  # MLflow's limit for one parameter value
FAILURE_PREFIX = "MLflow logging failed for run"
FAILURE_LINE = re.compile(re.escape(FAILURE_PREFIX) + r" ([0-9a-f]{32}|[\w.-]+)")

_failed_runs: dict[str, str] = {}  # run id (or a node name before its run exists) -> first error
_failed_lock = threading.Lock()
# MLflow's sqlalchemy store logs a full traceback for every failed statement; we report it ourselves
_NOISY_LOGGERS = ("mlflow.store.db.utils", "urllib3.connectionpool", "mlflow.utils.request_utils")


def client(uri: str | None = None):
    """The MLflow client of a store (default: ``MLFLOW_TRACKING_URI``), one per store."""
    return _client_for(uri or os.environ[URI_ENV])


@functools.lru_cache(maxsize=8)
def _client_for(uri: str):
    """One client per store: building one per call cost more than the call itself."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


_UNSET = object()
_node_run = threading.local()  # the run of the node this thread executes (set by the hook)


def use_run(run_id: str | None) -> None:
    """Make ``run_id`` this thread's run (None: this thread's node is not tracked).

    The thread runner executes nodes side by side in one process, where one ``MLFLOW_RUN_ID``
    cannot name each node's run: a thread's own run comes first.
    """
    _node_run.run_id = run_id


def clear_run() -> None:
    """Back to ``MLFLOW_RUN_ID`` for this thread."""
    _node_run.run_id = _UNSET


def active_run_id() -> str | None:
    """The child run of the node being executed, or None outside a tracked node."""
    if not os.environ.get(URI_ENV):
        return None
    local = getattr(_node_run, "run_id", _UNSET)
    if local is not _UNSET:
        return local
    return os.environ.get(RUN_ID_ENV) or None


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with MLflow's run variable set to this thread's run (removed when it has none)."""
    env = dict(env)
    run_id = active_run_id()
    if run_id:
        env[RUN_ID_ENV] = run_id
    elif getattr(_node_run, "run_id", _UNSET) is None:
        env.pop(RUN_ID_ENV, None)
    return env


def short_error(err: BaseException) -> str:
    """One line that says what went wrong: sqlalchemy's autoflush/SQL/parameter lines are skipped."""
    skip = ("(raised as a result of", "[SQL", "[parameters", "(Background on this error")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(skip)] or lines or [type(err).__name__]
    return f"{type(err).__name__}: {useful[0]}"[:400]


def run_failed(key: str) -> bool:
    """True once a failure was reported for this run id (or node name) in this process."""
    with _failed_lock:
        return key in _failed_runs


def mark_failed(key: str, reason: str = "reported by a training process") -> bool:
    """Record a failure for ``key`` without logging; True if it was not recorded before."""
    with _failed_lock:
        if key in _failed_runs:
            return False
        _failed_runs[key] = reason
        return True


def report_failure(key: str, what: str, err: BaseException) -> None:
    """Warn once per run id (or node name): later calls for the same key stay silent."""
    reason = short_error(err)
    if mark_failed(key, reason):
        logger.warning("%s %s while %s (%s); nothing more is logged to this run, the node goes on and "
                       "its outputs are saved", FAILURE_PREFIX, key, what, reason)


def forget_failures() -> None:
    """Clear the failure record (a new ``kedro run`` in the same process starts afresh)."""
    with _failed_lock:
        _failed_runs.clear()


class _QuietFilter(logging.Filter):
    """Drops MLflow's own error logging inside our calls (we report the failure ourselves)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet_state, "depth", 0)


_quiet_state = threading.local()
_QUIET_FILTER = _QuietFilter()
for _name in _NOISY_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET_FILTER)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    _quiet_state.depth = getattr(_quiet_state, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet_state.depth -= 1


def guarded(key: str, what: str, call: Callable[[], Any]) -> Any:
    """Run one MLflow call for run ``key``; a failure is reported once and returns None."""
    if run_failed(key):
        return None
    try:
        with quiet_mlflow():
            return call()
    except Exception as err:  # any store error: the training must not die of its bookkeeping
        if _is_refused_value(err):
            logger.warning("MLflow refused a value for run %s while %s (%s); skipped", key, what, short_error(err))
            return None
        report_failure(key, what, err)
        return None


def _is_refused_value(err: Exception) -> bool:
    """MLflow's own refusal of one value (a changed parameter): the store itself is fine."""
    return getattr(err, "error_code", None) == "INVALID_PARAMETER_VALUE"


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def numeric_items(tree: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) dict, flattened; everything else is dropped."""
    out = {}
    for key, value in flatten(tree).items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def log_params(params: Mapping[str, Any], run_id: str | None = None, uri: str | None = None) -> None:
    run_id = run_id or active_run_id()
    if run_id is None or not params:
        return
    from mlflow.entities import Param

    items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(params).items()]

    def call() -> None:
        store = client(uri)
        for start in range(0, len(items), 100):  # the REST/SQL batch limit
            store.log_batch(run_id, params=items[start : start + 100])

    guarded(run_id, "logging parameters", call)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, run_id: str | None = None,
                uri: str | None = None) -> None:
    """Log the numeric values of ``metrics`` (nested dicts are flattened with dots)."""
    run_id = run_id or active_run_id()
    if run_id is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k.replace("@", "_at_"), v, now, step or 0) for k, v in numeric_items(metrics).items()]

    def call() -> None:
        store = client(uri)
        for start in range(0, len(items), 1000):
            store.log_batch(run_id, metrics=items[start : start + 1000])

    if items:
        guarded(run_id, "logging metrics", call)


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None, run_id: str | None = None,
                 uri: str | None = None) -> None:
    """Copy a file (or a folder, with its files) into the run's artifacts under ``artifact_path``."""
    run_id = run_id or active_run_id()
    if run_id is None:
        return

    def call() -> None:
        store = client(uri)
        if os.path.isdir(path):
            store.log_artifacts(run_id, str(path), artifact_path)
        else:
            store.log_artifact(run_id, str(path), artifact_path)

    guarded(run_id, f"logging the artifact {path}", call)


def set_tags(tags: Mapping[str, Any], run_id: str | None = None, uri: str | None = None) -> None:
    run_id = run_id or active_run_id()
    if run_id is None or not tags:
        return

    def call() -> None:
        store = client(uri)
        for key, value in tags.items():
            store.set_tag(run_id, key, str(value))

    guarded(run_id, "setting tags", call)
