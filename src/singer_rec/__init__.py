"""singer-rec: SINGER generative recommendation over semantic IDs, as a Kedro project."""

__version__ = "0.1.0"
