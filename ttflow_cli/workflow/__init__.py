"""Runs end to end: fit a sampler, restore it from a run file, evaluate and sample it."""
