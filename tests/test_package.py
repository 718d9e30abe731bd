"""The package as users install it: the wheel's contents, core-only imports, the version."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

import relujax

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter with the optional packages made unimportable, as after a bare
# `pip install relujax`. Prints one JSON object.
_CORE_ONLY = r"""
import importlib, json, sys

BLOCKED = ("flax", "optax", "orbax", "matplotlib", "rich", "torch", "scipy")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocker())

import jax, jax.numpy as jnp
import relujax, relujax.data

out = {
    "relu": relujax.relu(jnp.array([-1.0, 2.0])).tolist(),
    "grad": float(jax.grad(lambda x: relujax.relu(x, subgradient=0.5))(0.0)),
    "synthetic": relujax.data.load_dataset("synthetic", n_train=8, n_test=4).x_train.shape,
    "version": relujax.__version__,
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED)),
    "errors": {},
}
for module in ("relujax.nn", "relujax.models", "relujax.interop", "relujax.training",
               "relujax.train"):
    try:
        importlib.import_module(module)
        out["errors"][module] = None
    except ModuleNotFoundError as e:
        out["errors"][module] = str(e)
try:
    import relujax.plot
    relujax.plot.plot_activations("unused.png")
except ModuleNotFoundError as e:
    out["errors"]["relujax.plot"] = str(e)
print(json.dumps(out))
"""


def _pyproject() -> str:
    return (ROOT / "pyproject.toml").read_text()


def test_core_import_needs_only_jax_and_numpy(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _CORE_ONLY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["relu"] == [0.0, 2.0] and out["grad"] == 0.5
    assert out["synthetic"] == [8, 32, 32, 3]
    assert out["loaded"] == []  # nothing optional was even attempted by `import relujax`
    assert out["version"] == relujax.__version__
    extras = {
        "relujax.nn": ("nn", "flax"),
        "relujax.models": ("nn", "flax"),
        "relujax.interop": ("nn", "flax"),
        "relujax.training": ("train", "flax, optax, orbax-checkpoint, matplotlib, rich"),
        "relujax.train": ("train", "flax, optax, orbax-checkpoint, matplotlib, rich"),
        "relujax.plot": ("plot", "matplotlib"),
    }
    for module, (extra, missing) in extras.items():
        message = out["errors"][module]
        assert message == (
            f"{module} needs {missing}, which {'is' if ',' not in missing else 'are'} not "
            f"installed: pip install 'relujax[{extra}]'"
        )


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_extras_in_pyproject_cover_what_each_module_requires():
    # The error messages above name extras; they must exist, with the packages they promise.
    text = _pyproject()
    for extra, packages in {
        "nn": ["flax"],
        "plot": ["matplotlib"],
        "train": ["flax", "optax", "orbax-checkpoint", "matplotlib", "rich"],
        "torch": ["torch==2.13.0"],
    }.items():
        match = re.search(rf"^{extra} = \[(.*?)\]", text, re.MULTILINE | re.DOTALL)
        assert match, f"extra {extra!r} missing from pyproject.toml"
        for package in packages:
            assert f'"{package}' in match.group(1), (extra, package)
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.MULTILINE | re.DOTALL).group(1)
    assert sorted(re.findall(r'"([a-z-]+)', deps)) == ["jax", "numpy"]


def test_version_is_pyproject_version():
    written = re.search(r'^version = "([^"]+)"', _pyproject(), re.MULTILINE).group(1)
    assert relujax.__version__ == written
    assert "__version__ =" not in (ROOT / "relujax" / "__init__.py").read_text()


def test_wheel_installs_relujax_alone(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("setuptools")
    # Build from a copy, so that setuptools' build/ and egg-info never land in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "relujax", src / "relujax", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", "dist", "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (src / "dist").glob("relujax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "relujax",
        f"relujax-{relujax.__version__}.dist-info",
    }
    assert "relujax/py.typed" in names and "relujax/_src/native/conv.cc" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(
        f"relujax-{relujax.__version__}.dist-info/entry_points.txt"
    )
    assert b"relujax-train = relujax.train:run" in entry_points


def test_benchmarks_write_under_the_current_directory():
    from benchmarks import _harness

    assert not _harness.DEFAULT_OUT_DIR.is_absolute()
