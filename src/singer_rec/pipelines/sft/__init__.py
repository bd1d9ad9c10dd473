"""sft: supervised fine-tuning of a model preset on the task prompts, in its own process."""
from singer_rec.pipelines.sft.pipeline import create_pipeline

__all__ = ["create_pipeline"]
