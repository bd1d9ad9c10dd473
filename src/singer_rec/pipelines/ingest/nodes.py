"""ingest node: one source's raw files (``raw_files``) -> the ``items`` and ``interactions`` tables."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from singer_rec.data import registry
from singer_rec.data.registry import RawSource
from singer_rec.params import from_params, rule


@dataclass
class SyntheticParams:
    """``ingest.synthetic``: size and structure of the demo (see ``singer_rec.data.synthetic``)."""

    n_users: int = field(default=400, metadata=rule(ge=1))
    n_items: int = field(default=240, metadata=rule(ge=2))
    n_categories: int = field(default=6, metadata=rule(ge=1))
    brands_per_category: int = field(default=4, metadata=rule(ge=1))
    min_sequence_length: int = field(default=6, metadata=rule(ge=2))
    max_sequence_length: int = field(default=12, metadata=rule(ge=2))
    p_main_category: float = field(default=0.85, metadata=rule(ge=0, le=1))
    p_follow_ring: float = field(default=0.7, metadata=rule(ge=0, le=1))
    p_favourite_brand: float = field(default=0.6, metadata=rule(ge=0, le=1))
    n_untitled_items: int = field(default=2, metadata=rule(ge=0))
    span_days: int = field(default=760, metadata=rule(ge=1))

    def check(self, where: str) -> None:
        if self.min_sequence_length > self.max_sequence_length:
            raise ValueError(f"{where}.min_sequence_length ({self.min_sequence_length}) must be <= "
                             f"{where}.max_sequence_length ({self.max_sequence_length})")
        if self.n_items < 2 * self.n_categories:
            raise ValueError(f"{where}.n_items ({self.n_items}) must be at least 2 per category "
                             f"({where}.n_categories = {self.n_categories})")


@dataclass
class IngestParams:
    """``params:ingest``. Which source and files: the ``raw_files`` catalog entry (globals)."""

    skip_bad_lines: bool = False       # skip (count and log) malformed lines instead of failing
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)


logger = logging.getLogger(__name__)


def ingest(raw_files: RawSource, seed: int, params: dict[str, Any]
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the source of ``raw_files`` into ``(items, interactions, given_sequences)``.

    The source is looked up by name in :mod:`singer_rec.data.registry` (``synthetic`` reads no
    file: it generates the demo from ``seed`` and ``params['synthetic']``). ``given_sequences``
    holds the splits a source ships (``minionerec``) and is empty otherwise. Any bad input raises
    before anything is returned, so Kedro saves no partial output.
    """
    config = from_params(IngestParams, params, "ingest")
    source, dataset = raw_files.source, raw_files.dataset
    spec = registry.get_source(source)
    request = registry.ReadRequest(
        source=source, dataset=dataset, root=raw_files.root, files=dict(raw_files.files),
        options=spec.with_defaults(raw_files.options), seed=int(seed), skip_bad_lines=config.skip_bad_lines,
        params=asdict(config),
    )
    items, interactions, given = spec.read(request)
    logger.info(
        "ingest %s %s: %d items, %d interactions, %d users, %d given sequence rows",
        source, dataset, len(items), len(interactions), interactions["user_id"].nunique(), len(given),
    )
    return items, interactions, given
