"""Implementation of `relujax.training` (training steps, loop, checkpoints, metrics)."""
