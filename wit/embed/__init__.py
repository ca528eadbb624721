"""`wit embed`: image and text embeddings of a SHARDS dir (`run`: its config and flags; the work
is `train.model.shard_embeddings`)."""
