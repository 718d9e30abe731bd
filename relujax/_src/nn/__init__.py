"""Flax NNX activation modules (implementation of :mod:`relujax.nn`)."""
