"""A griffe extension for the API reference: relujax's ``Example:`` sections render as examples.

relujax's docstrings (Google style) head their doctests ``Example:``; griffe's Google parser
knows the plural ``Examples:`` only and would render the singular as an admonition of plain
Markdown. This renames the heading when mkdocstrings loads the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames ``Example:`` to ``Examples:`` in every docstring of the loaded package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=pkg)
