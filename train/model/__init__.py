"""The CLIP model: creating and loading OpenCLIP models (`clip`), encoding images and texts
(`encode`: the model library every evaluation, search, `wit embed` and `wit filter` call)
and the EMBED dir of a SHARDS dir (`shard_embeddings`)."""
