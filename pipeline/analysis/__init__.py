"""Analyses of a run: pure functions from its files (trajectory, checkpoints) to tables."""
