"""report: every method's test metrics in the paper's Table 1 layout (markdown, csv, bar chart)."""
from singer_rec.pipelines.report.pipeline import create_pipeline

__all__ = ["create_pipeline"]
