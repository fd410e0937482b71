"""Synthetic worlds for tests and benchmarks: random and calibrated OWL-ViT checkpoints, shapes scenes."""
