"""embed: item text (title + description by default) -> frozen-encoder vectors (`item_embeddings`)."""
from singer_rec.pipelines.embed.pipeline import create_pipeline

__all__ = ["create_pipeline"]
