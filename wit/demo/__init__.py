"""The demo world: procedural image-text data that a small CLIP can learn on a CPU."""
