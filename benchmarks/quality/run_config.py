"""A Kedro run-config file: a base one (the CPU recipe) with dotted overrides, parsed as `--params` parses them.

Kedro's ``--params`` splits its argument at commas, so a list value (``prompts.rl_tasks``) cannot
be given there; an experiment that changes one writes a run-config file instead:

    python benchmarks/quality/run_config.py conf/cpu_budget.yml \
        prompts.rl_heldout_share=0.2 "prompts.rl_tasks=[semantic, title_history_to_sid]" --output /tmp/run.yml
    kedro run --env=office --config=/tmp/run.yml
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from singer_rec.cli import merge_params


def with_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with each ``a.b.c=value`` merged under ``run.params``, key by key as ``kedro run``
    merges ``--params`` over a run-config file; values are parsed as Kedro parses ``--params``
    (OmegaConf's dot-list), so ``[a, b]`` is a list."""
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {override!r}: expected key.path=value")
    cli_params = OmegaConf.to_container(OmegaConf.from_dotlist(overrides))
    run = dict(config.get("run") or {})
    run["params"] = merge_params(run.get("params") or {}, cli_params)
    return {**config, "run": run}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the base run-config file, e.g. conf/cpu_budget.yml")
    parser.add_argument("overrides", nargs="*", help="key.path=value under run.params (lists allowed: [a, b])")
    parser.add_argument("--output", type=Path, required=True, help="the run-config file to write")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.base.read_text(encoding="utf-8")) or {}
    args.output.write_text(yaml.safe_dump(with_overrides(config, args.overrides), sort_keys=False), encoding="utf-8")


if __name__ == "__main__":
    main()
