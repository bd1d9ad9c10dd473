"""prompts: the six task datasets for SFT and RL (paper §3.1, Fig. 5-10)."""
from singer_rec.pipelines.prompts.pipeline import create_pipeline

__all__ = ["create_pipeline"]
