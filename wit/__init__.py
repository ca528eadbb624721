"""WIT toolkit: build CLIP's WebImageText dataset (queries, crawl, shards)."""

__version__ = "0.1.0"
