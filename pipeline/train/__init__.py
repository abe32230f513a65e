"""Training: one Accelerate loop shared by every stage, its callbacks and checkpoints, and the stage
runner that takes a run from its folder to its report."""
