"""Project CLI: Kedro's own commands, with one change to ``kedro run``, and ``kedro prune``.

Given a run-config file (``--config=conf/cpu_budget.yml``) and ``--params`` together, click lets
the command line's ``params`` replace the file's whole ``params`` block, so
``--config=conf/cpu_budget.yml --params=seed=43`` would silently drop the CPU recipe. Here the
command line's parameters are merged key by key over the file's (the command line wins), which is
what a user means by adding a flag.

``kedro prune --env=<env> [--keep=N] [--dry-run]`` deletes all but the newest N versions of every
versioned output of an environment (``singer_rec.prune``).
"""
from __future__ import annotations

import copy
from pathlib import Path
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


@cli.command("prune")
@click.option("--env", "-e", default="local", show_default=True, help="the environment whose outputs to prune")
@click.option("--keep", default=2, show_default=True, type=int, help="versions kept per dataset (>= 1), newest first")
@click.option("--dry-run", is_flag=True, help="list what would be deleted, delete nothing")
@click.option("--conf-source", default="conf", show_default=True, help="the project's conf folder")
def prune(env: str, keep: int, dry_run: bool, conf_source: str) -> None:
    """Delete old versions of versioned outputs (models, embeddings, SIDs), keeping the newest --keep."""
    from singer_rec.prune import prune_versions
    from singer_rec.settings import project_config

    if keep < 1:
        raise click.BadParameter("must be >= 1 (the newest version is what a load returns)", param_hint="--keep")
    removed = prune_versions(project_config(conf_source, env, "catalog"), keep, Path.cwd(), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for entry, stale, _ in removed:
        click.echo(f"{entry.dataset}: {len(entry.versions)} version(s), {verb} {len(stale)}")
        for folder in stale:
            click.echo(f"  {folder}")
    if not removed:
        click.echo(f"no versioned outputs under env {env!r}")
    else:
        click.echo(f"{sum(size for *_, size in removed) / 2**20:.1f} MiB {'would be ' if dry_run else ''}freed")
