"""State that outlives a worker: model checkpoints with their offsets, and the attempt log."""
