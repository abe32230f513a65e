"""Studies: several runs of one recipe, varied, then compared in one figure and table."""
