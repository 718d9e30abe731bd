"""relujax: the ReLU family of activations for JAX."""

__version__ = "0.1.0"
