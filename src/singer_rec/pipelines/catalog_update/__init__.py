"""catalog_update: new items -> SIDs from the trained codebooks -> new versions of the model folders, no retraining."""
from singer_rec.pipelines.catalog_update.pipeline import create_pipeline

__all__ = ["create_pipeline"]
