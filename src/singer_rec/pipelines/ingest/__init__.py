"""ingest: raw files of one source -> ``items``, ``interactions`` (+ ``given_sequences``)."""
from singer_rec.pipelines.ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
