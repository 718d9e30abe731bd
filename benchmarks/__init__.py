"""relujax's XLA benchmarks: standalone scripts run as ``python -m benchmarks.<name>``.

Never collected by pytest. See ``benchmarks/README.md`` for what each measures and
``benchmarks/RESULTS.md`` for the latest figures.
"""
