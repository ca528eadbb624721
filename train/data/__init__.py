"""The trainer's data: the shards a run reads (`shards`), the paper's image preprocessing
(`preprocess`) and the resumable, balanced stream of batches (`stream`)."""
