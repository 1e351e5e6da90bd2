"""memgen: web image shards -> deduplicated Parquet image memories, samples and evaluations."""

__version__ = "0.1.0"
