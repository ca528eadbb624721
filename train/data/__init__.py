"""The trainer's data: the shards a run reads (`shards`), the paper's image preprocessing
(`preprocess`), the resumable, balanced stream of batches (`stream`) and its mix of several
sources or resampled shards (`mix`)."""
