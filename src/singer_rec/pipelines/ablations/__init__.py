"""ablations: runs a list of SINGER variants (paper Fig. 4) and writes one comparison table."""
from singer_rec.pipelines.ablations.pipeline import create_pipeline

__all__ = ["create_pipeline"]
