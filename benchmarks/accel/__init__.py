"""The sections of `python -m benchmarks.accel_check` (see its docstring)."""
