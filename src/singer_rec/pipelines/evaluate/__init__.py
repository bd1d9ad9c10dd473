"""evaluate: constrained beam search on the test (and valid) rows of a model folder, metrics and report."""
from singer_rec.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
