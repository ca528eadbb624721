"""`wit view`: a local, read-only web page over a SHARDS dir (and its EMBED and FILTER
outputs), answered from an index built once in a cache dir (docs/view.md)."""
