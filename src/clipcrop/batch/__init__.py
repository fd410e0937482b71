"""Resumable, exactly-once batch cropping on Ray Data."""
