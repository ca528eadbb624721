"""`wit shard` and `wit inspect`: final WebDataset shards with manifest and data card."""
