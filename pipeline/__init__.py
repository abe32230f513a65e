"""Accelerate trainers, evaluation and reports for studying how language models learn facts."""
