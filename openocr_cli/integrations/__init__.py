"""Detection inside other engines' pipelines (Ray Data), as optional extras: each module imports its engine, and
the results it gives are the ones `predict` gives for the same images and settings."""
