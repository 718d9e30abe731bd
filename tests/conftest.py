"""Shared pytest configuration for relujax."""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_enable_x64", True)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("RELUJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """The real CIFAR files of ../shared/data; skips when the folder is absent."""
    if not (SHARED_DATA / "cifar2.npz").exists():
        pytest.skip(f"real CIFAR data not found in {SHARED_DATA} (only present beside the repo)")
    return SHARED_DATA
