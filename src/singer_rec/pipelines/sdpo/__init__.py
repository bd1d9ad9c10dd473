"""sdpo: softmax DPO with several random negatives per prompt on top of the SFT model (a Table 1 baseline)."""
from singer_rec.pipelines.sdpo.pipeline import create_pipeline

__all__ = ["create_pipeline"]
