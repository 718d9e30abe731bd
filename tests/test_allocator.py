"""The allocator relaunch: what `RELUJAX_ALLOCATOR` asks for is what the relaunched process runs."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from relujax._src import allocator

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="allocator choice is Linux's")
_PROBE = "from relujax._src import allocator; allocator.relaunch(); print(allocator.describe())"


def _probe(choice: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    env.pop(allocator._MARK, None)
    env[allocator.ENV] = choice
    return subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
    )


def _glibc_has_hugetlb() -> bool:
    version = allocator._glibc_version()
    return version is not None and version >= (2, 35)


def test_bad_choice_names_the_variable(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(ValueError, match=r"RELUJAX_ALLOCATOR.*auto, tcmalloc, hugetlb, system.*"):
        allocator.requested()
    done = _probe("jemalloc")
    assert done.returncode != 0 and "RELUJAX_ALLOCATOR" in done.stderr
    assert "Traceback" not in done.stderr


def test_system_is_an_opt_out(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.plan() == {}
    done = _probe("system")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "system"


@linux_only
@pytest.mark.parametrize("choice", ["auto", "tcmalloc", "hugetlb"])
def test_relaunch_runs_under_the_choice(choice):
    have_tcmalloc = allocator.find_tcmalloc() is not None
    if choice == "tcmalloc" and not have_tcmalloc:
        pytest.skip("no tcmalloc library installed (Debian: libtcmalloc-minimal4)")
    if choice == "hugetlb" and not _glibc_has_hugetlb():
        pytest.skip("glibc older than 2.35 has no malloc.hugetlb tunable")
    expected = {
        "tcmalloc": "tcmalloc",
        "hugetlb": "glibc+hugetlb",
        "auto": "tcmalloc" if have_tcmalloc else "glibc+hugetlb",
    }[choice]
    if choice == "auto" and not have_tcmalloc and not _glibc_has_hugetlb():
        expected = "system"
    done = _probe(choice)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


@linux_only
def test_missing_tcmalloc_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    with pytest.raises(ValueError, match="libtcmalloc-minimal4"):
        allocator.plan("tcmalloc")
    # auto falls back instead of failing
    assert "LD_PRELOAD" not in allocator.plan("auto")


@linux_only
def test_plan_keeps_existing_settings(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    if not _glibc_has_hugetlb():
        pytest.skip("glibc older than 2.35")
    assert allocator.plan("hugetlb") == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    }


_RELEASE_PROBE = """
import pathlib
import numpy as np
from relujax._src import allocator

def rss_mib():
    status = pathlib.Path("/proc/self/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1]) // 1024

chunks = [np.ones(1 << 18, np.float32) for _ in range(256)]  # 256 x 1 MiB, then freed
held = rss_mib()
del chunks
kept = rss_mib()
print(held, kept, allocator.release_free_memory(), rss_mib())
"""


@linux_only
@pytest.mark.parametrize("choice", ["system", "tcmalloc"])
def test_release_free_memory_returns_what_the_allocator_kept(choice):
    """tcmalloc keeps freed memory resident (glibc hands 1 MiB blocks back at once); after the
    release neither process holds the 256 MiB it freed."""
    if choice == "tcmalloc" and allocator.find_tcmalloc() is None:
        pytest.skip("tcmalloc is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    env.update(allocator.plan(choice))
    done = subprocess.run(
        [sys.executable, "-c", _RELEASE_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    held, kept, found, after = done.stdout.split()
    assert found == "True"
    assert int(held) - int(after) > 200, done.stdout
    if choice == "tcmalloc":
        assert int(kept) - int(after) > 200, done.stdout  # kept until released
