"""Optional dependencies: one clear error naming the extra to install when one is missing.

`pip install relujax` brings only what the functional activations need (jax, numpy). The other
public modules need an extra; each calls `require` first, so that a missing package gives one
`ModuleNotFoundError` saying which extra installs it, instead of a bare `No module named ...`
from deep inside the package.
"""

from __future__ import annotations

import importlib

# The import name of each optional package and the distribution that pip installs it from.
_DISTRIBUTIONS = {"orbax.checkpoint": "orbax-checkpoint"}


def require(module: str, extra: str, *packages: str) -> None:
    """Imports `packages`; raises one `ModuleNotFoundError` naming `extra` if any is missing.

    Args:
      module: the public module that needs them, for the message (e.g. ``"relujax.nn"``).
      extra: the pyproject extra that installs them (e.g. ``"nn"``).
      packages: import names (e.g. ``"flax"``, ``"orbax.checkpoint"``).

    Example:
      >>> require("relujax.nn", "nn", "jax")  # present: returns None
      >>> require("relujax.nn", "nn", "no_such_package_xyz")
      Traceback (most recent call last):
      ...
      ModuleNotFoundError: relujax.nn needs no_such_package_xyz, which is not installed: pip install 'relujax[nn]'
    """  # noqa: E501
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only the package itself (or a parent) missing counts; a broken install's own
            # missing dependency is re-raised as it is.
            if e.name is not None and name != e.name and not name.startswith(e.name + "."):
                raise
            missing.append(_DISTRIBUTIONS.get(name, name))
    if missing:
        what = ", ".join(missing)
        verb = "which is" if len(missing) == 1 else "which are"
        raise ModuleNotFoundError(
            f"{module} needs {what}, {verb} not installed: pip install 'relujax[{extra}]'",
            name=missing[0],
        )
