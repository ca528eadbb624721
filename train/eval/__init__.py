"""Evaluation: zero-shot, retrieval, linear probe and suites (`evaluator` builds them; `python -m
train.evaluate` and the trainer run them)."""
