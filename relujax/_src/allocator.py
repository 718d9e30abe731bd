"""The memory allocator a CPU process runs with, and a relaunch under a better one.

XLA:CPU allocates every temporary of a step with `malloc`. glibc serves large requests with
`mmap` and returns them to the kernel on `free`, so each step page-faults its temporaries in
again and element-wise passes run at a fraction of the memory bandwidth. An allocator that keeps
its pages (tcmalloc), or glibc told to back its heap with transparent huge pages, avoids that.
The choice must be made before the process starts (`LD_PRELOAD`, `GLIBC_TUNABLES`), so the
entry points (`relujax-train`, `python -m train`, `python -m benchmarks.<name>`) call
:func:`relaunch` first: it re-executes the same command once under the chosen allocator.

`RELUJAX_ALLOCATOR` picks it: `auto` (default: tcmalloc when installed, else glibc's huge-page
tunable where glibc >= 2.35, else the system's), `tcmalloc`, `hugetlb`, or `system` (opt out).
Your own scripts get the same with one line in the shell::

    LD_PRELOAD=libtcmalloc_minimal.so.4 python my_script.py   # Debian: libtcmalloc-minimal4

:func:`describe` says which allocator the current process runs with (the training application
prints it and writes it into `summary.json`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib
import platform
import sys

ENV = "RELUJAX_ALLOCATOR"
CHOICES = ("auto", "tcmalloc", "hugetlb", "system")
_MARK = "RELUJAX_ALLOCATOR_RELAUNCHED"
_HUGETLB = "glibc.malloc.hugetlb=1"
_TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def requested() -> str:
    """The allocator asked for through `RELUJAX_ALLOCATOR` (`auto` when unset).

    Raises:
      ValueError: the variable holds something else than one of :data:`CHOICES`.
    """
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"${ENV}: expected one of {', '.join(CHOICES)}; got {value!r}")
    return value


def find_tcmalloc() -> str | None:
    """The path of an installed tcmalloc shared library, or None."""
    for directory in _LIB_DIRS:
        for name in _TCMALLOC_NAMES:
            path = pathlib.Path(directory, name)
            if path.is_file():
                return str(path)
    found = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    return found if found and pathlib.Path(found).is_absolute() else None


def _glibc_version() -> tuple[int, int] | None:
    name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    if name != "glibc":
        return None
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    return major, minor


def _loaded_tcmalloc() -> bool:
    try:
        return "tcmalloc" in pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return False


def describe() -> str:
    """The allocator of the running process: `tcmalloc`, `glibc+hugetlb`, or `system`."""
    if _loaded_tcmalloc():
        return "tcmalloc"
    if _HUGETLB in os.environ.get("GLIBC_TUNABLES", ""):
        return "glibc+hugetlb"
    return "system"


def release_free_memory() -> bool:
    """Hands the memory the allocator keeps but no longer uses back to the OS.

    Compiling a training step takes far more memory than running it; tcmalloc keeps what the
    compiler freed for reuse, so a long run would hold the compiler's peak to its end. The
    training application calls this once after compiling. tcmalloc:
    ``MallocExtension_ReleaseFreeMemory``; glibc: ``malloc_trim(0)``. Returns whether either
    was found (False off Linux/glibc, where nothing is done).

    Example:
        >>> import platform
        >>> release_free_memory() == (platform.system() == "Linux")  # glibc or tcmalloc there
        True
    """
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return False
    for name, args in (("MallocExtension_ReleaseFreeMemory", ()), ("malloc_trim", (0,))):
        fn = getattr(process, name, None)
        if fn is not None:
            fn(*args)
            return True
    return False


def plan(choice: str | None = None) -> dict[str, str]:
    """The environment changes that give ``choice`` (default :func:`requested`); {} for none.

    Only Linux has a choice; `auto` falls back from tcmalloc to the glibc tunable to nothing.
    """
    choice = requested() if choice is None else choice
    if choice == "system" or platform.system() != "Linux":
        return {}
    if choice in ("auto", "tcmalloc"):
        path = find_tcmalloc()
        if path is not None:
            preload = os.environ.get("LD_PRELOAD", "")
            return {"LD_PRELOAD": f"{path}:{preload}" if preload else path}
        if choice == "tcmalloc":
            raise ValueError(
                f"${ENV}=tcmalloc: no tcmalloc library found in {', '.join(_LIB_DIRS)}; "
                "install it (Debian/Ubuntu: apt-get install libtcmalloc-minimal4) or set "
                f"${ENV}=auto"
            )
    glibc = _glibc_version()
    if glibc is not None and glibc >= (2, 35):
        tunables = os.environ.get("GLIBC_TUNABLES", "")
        return {"GLIBC_TUNABLES": f"{tunables}:{_HUGETLB}" if tunables else _HUGETLB}
    if choice == "hugetlb":
        raise ValueError(f"${ENV}=hugetlb needs glibc >= 2.35; this process has {glibc}")
    return {}


def relaunch() -> None:
    """Re-executes this command once under the requested allocator; returns if nothing to do.

    Call it first thing in an entry point's ``if __name__ == "__main__":`` block, never from
    library code (it replaces the process). It does nothing when the process already runs under
    the requested allocator, was relaunched before, or the choice is `system`.
    """
    if os.environ.get(_MARK) or describe() != "system":
        return
    try:
        changes = plan()
    except ValueError as e:
        sys.exit(f"error: {e}")
    if not changes:
        return
    env = dict(os.environ, **changes, **{_MARK: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
