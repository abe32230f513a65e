"""Studies: grids of runs (one typed schema for every kind), run here or on a cluster, aggregated,
fitted and drawn."""
