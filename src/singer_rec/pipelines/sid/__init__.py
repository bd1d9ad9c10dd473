"""sid: balanced RQ-KMeans over `item_embeddings` -> one-to-one semantic IDs (`item_sids`)."""
from singer_rec.pipelines.sid.pipeline import create_pipeline

__all__ = ["create_pipeline"]
