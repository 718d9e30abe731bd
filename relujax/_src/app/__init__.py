"""The training application behind `relujax-train` / `python -m relujax.train` / `python -m train`."""
