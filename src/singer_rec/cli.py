"""Project CLI: Kedro's own commands, with one change to ``kedro run``.

Given a run-config file (``--config=conf/cpu_budget.yml``) and ``--params`` together, click lets
the command line's ``params`` replace the file's whole ``params`` block, so
``--config=conf/cpu_budget.yml --params=seed=43`` would silently drop the CPU recipe. Here the
command line's parameters are merged key by key over the file's (the command line wins), which is
what a user means by adding a flag.
"""
from __future__ import annotations

import copy
from typing import Any

import click
from click.core import ParameterSource
from kedro.framework.cli.project import run as kedro_run


def merge_params(file_params: dict[str, Any], cli_params: dict[str, Any]) -> dict[str, Any]:
    """``cli_params`` over ``file_params``, nested mappings merged key by key."""
    merged = dict(file_params)
    for key, value in cli_params.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_params(merged[key], value)
        else:
            merged[key] = value
    return merged


def _run(**kwargs: Any) -> Any:
    ctx = click.get_current_context()
    file_params = (ctx.default_map or {}).get("params")
    if isinstance(file_params, dict) and ctx.get_parameter_source("params") is ParameterSource.COMMANDLINE:
        kwargs["params"] = merge_params(file_params, kwargs["params"] or {})
    return kedro_run.callback(**kwargs)


run = copy.copy(kedro_run)
run.callback = _run


@click.group(name="singer_rec")
def cli() -> None:
    """singer-rec's project commands (Kedro's, with ``run`` merging --params over --config)."""


cli.add_command(run, "run")
