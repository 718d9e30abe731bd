"""`relujax.__version__`: pyproject.toml is the one place the version is written.

Installed (wheel), it is read from the package metadata that pip wrote from pyproject.toml. Run
from a checkout (installed in editable mode or not at all), it is read from the checkout's own
pyproject.toml, which is then the file being edited.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re


def version() -> str:
    """The version of relujax: the checkout's pyproject.toml, else the package metadata."""
    pyproject = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8")
        if re.search(r'^name\s*=\s*"relujax"', text, re.MULTILINE):
            match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
            if match:
                return match.group(1)
    try:
        return importlib.metadata.version("relujax")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
