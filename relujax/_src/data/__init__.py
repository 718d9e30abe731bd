"""Implementation of `relujax.data` (datasets and the on-device input pipeline)."""
