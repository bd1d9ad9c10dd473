"""rl: SINGER's SID-navigated GRPO on top of the SFT model (or a base model: the RL-only variant)."""
from singer_rec.pipelines.rl.pipeline import create_pipeline

__all__ = ["create_pipeline"]
