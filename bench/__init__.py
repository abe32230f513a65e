"""Benchmarks: each file runs as a script from any folder (`python bench/gpu_suite.py`) or imports from the repo
root (`from bench import train_speed`)."""
