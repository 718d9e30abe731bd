"""A griffe extension for the API reference: relujax's docstrings as Markdown expects them.

relujax's docstrings (Google style) head their doctests ``Example:``; griffe's Google parser
knows the plural ``Examples:`` only and would render the singular as an admonition of plain
Markdown. Some also name objects with Sphinx roles (``:class:`Foo```), which Markdown would
print as they are. This renames the heading and turns the roles into code spans when
mkdocstrings loads the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|obj|exc):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    """``Example:`` -> ``Examples:``, ``:role:`name``` -> ```name``` in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=pkg)
