"""``OptionalDataset``: wraps any dataset and loads ``None`` when the wrapped data is absent.

For results other stages may or may not have produced (the report's inputs), so a run with only
some of them still works. Saving writes through to the wrapped dataset, so the producing stage
and the report use one catalog entry.

    baseline_metrics:
      type: singer_rec.datasets.optional.OptionalDataset
      dataset: {type: pandas.CSVDataset, filepath: data/demo/08_reporting/baseline_metrics.csv}
"""
from __future__ import annotations

import logging
from typing import Any

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


class OptionalDataset(AbstractDataset):
    def __init__(self, dataset: dict[str, Any], metadata: dict[str, Any] | None = None):
        if not isinstance(dataset, dict) or "type" not in dataset:
            raise DatasetError("OptionalDataset needs 'dataset': a dataset config with a 'type'")
        self._dataset = AbstractDataset.from_config("optional_inner", dict(dataset))
        self.metadata = metadata

    def load(self) -> Any:
        if not self._dataset.exists():
            logger.info("optional input %s is absent: loading None", self._dataset)
            return None
        return self._dataset.load()

    def save(self, data: Any) -> None:
        self._dataset.save(data)

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": str(self._dataset)}
