"""`python -m train` from a checkout: the application of `relujax.train`, plus the experiments.

The application itself lives in the package (`relujax-train`, `python -m relujax.train`);
`train/experiments/` holds the reproduction and study scripts that only make sense in the repo.
"""
