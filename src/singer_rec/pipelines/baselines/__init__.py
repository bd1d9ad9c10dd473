"""baselines: Popularity, a first-order Markov chain, GRU4Rec, Caser, SASRec, HSTU and a TIGER-style model on our splits and metrics."""
from singer_rec.pipelines.baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]
