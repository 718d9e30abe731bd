"""The training application: `relujax-train`, `python -m relujax.train`, `python -m train`."""
