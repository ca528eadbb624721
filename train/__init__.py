"""Contrastive CLIP trainer (`python -m train`)."""
