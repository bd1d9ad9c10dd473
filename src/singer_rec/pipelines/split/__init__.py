"""split: ``interactions`` -> ``{train,valid,test}_sequences`` and ``split_stats``."""
from singer_rec.pipelines.split.pipeline import create_pipeline

__all__ = ["create_pipeline"]
