"""Shared training mechanics: schedule config, optimiser, densification, checkpoints, the loop."""
