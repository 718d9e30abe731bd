"""Examples that stay true: every docstring example and every Python block of README and docs/.

Docstring examples run as doctests, module by module. A Markdown file's ```python blocks run in
order in one namespace, as a reader would type them: a block written as a doctest (``>>>``) has
its shown outputs checked; a plain block must run without error. Both run in the user's regime
(float32, x64 off) in a scratch working directory.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pathlib
import re

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "relujax").rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8")
)
MARKDOWN = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: str(p.relative_to(ROOT)),
)
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture
def user_regime(tmp_path, monkeypatch):
    """float32 as users run it (conftest turns x64 on for the float64 references), in tmp_path."""
    monkeypatch.chdir(tmp_path)
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield tmp_path
    finally:
        jax.config.update("jax_enable_x64", old)


def _run_doctest(test: doctest.DocTest) -> tuple[int, str]:
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=report.append, clear_globs=False)
    return runner.failures, "".join(report)


def test_examples_are_found():
    # The collection below must see the examples (a wrong pattern would pass vacuously).
    assert "relujax._src.activations.piecewise" in MODULES and "relujax" in MODULES
    assert len(_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))) >= 3


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, user_regime):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    assert sum(len(t.examples) for t in tests), f"{name}: no example found"
    for test in tests:
        failures, report = _run_doctest(test)
        assert failures == 0, report


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_examples(path, user_regime):
    text = path.read_text(encoding="utf-8")
    globs: dict = {"__name__": "__main__"}
    for match in _BLOCK.finditer(text):
        code, line = match.group(1), text.count("\n", 0, match.start()) + 2
        where = f"{path.relative_to(ROOT)}:{line}"
        if "import torch" in code and importlib.util.find_spec("torch") is None:
            pytest.skip(f"{where} and after need PyTorch (the `torch` extra)")
        if ">>>" in code:
            test = doctest.DocTestParser().get_doctest(code, globs, where, str(path), line - 1)
            failures, report = _run_doctest(test)
            assert failures == 0, report
            globs.update(test.globs)  # DocTest ran on a copy: carry its names to the next block
        else:
            exec(compile(code, where, "exec"), globs)


def test_api_reference_has_a_page_per_public_module():
    # mkdocstrings renders each page's module with its __all__; a new public module needs a page.
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    public = sorted(p.stem for p in (ROOT / "relujax").glob("*.py") if not p.stem.startswith("_"))
    assert public, "no public module found"
    for stem in ["relujax", *public]:
        page = "relujax.md" if stem == "relujax" else f"{stem}.md"
        module = "relujax" if stem == "relujax" else f"relujax.{stem}"
        text = (ROOT / "docs" / "api" / page).read_text(encoding="utf-8")
        assert f"::: {module}\n" in text, page
        assert f"api/{page}" in nav, f"api/{page} is not in mkdocs.yml's nav"
