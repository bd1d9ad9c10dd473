"""A training entry point for the tests: logs one metric per step through ``singer_rec.tracking``.

Run as ``python -m logging_entry --config FILE`` by ``run_training``; writes ``{"steps_done": n}``
to ``config["result_path"]`` once all steps are done, whatever the store does.
"""
import json
import logging
import sys
from pathlib import Path

from singer_rec import tracking
from singer_rec.training.common import read_config


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    config = read_config(argv)
    steps = int(config["steps"])
    for step in range(1, steps + 1):
        tracking.log_metrics({"loss": 1.0 / step}, step=step)
    Path(config["result_path"]).write_text(json.dumps({"steps_done": steps}), encoding="utf-8")


if __name__ == "__main__":
    main()
