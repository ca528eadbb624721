"""`wit filter`: a SHARDS dir in, a filtered SHARDS dir out (near-duplicates, test-set
overlap, CLIP score, text rules)."""
