"""llm_baselines: BIGRec, BIGRec title-constrained and D3 on a title model trained by our SFT trainer."""
from singer_rec.pipelines.llm_baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]
