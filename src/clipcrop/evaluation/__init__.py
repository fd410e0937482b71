"""Evaluation: IoU and GAIC metrics, the harness that runs a predictor over a dataset."""
