"""Timing harness shared by the benchmarks.

The machines these run on are shared and noisy, so every comparison is made side by side in one
process: the candidates are called in turn (A, B, C, A, B, C, ...), after a warm-up, and each
reports the median of its own samples; ratios of medians taken this way are far steadier than
absolute times. Compile time is always measured apart (``lower(...).compile()``), never mixed
into a step time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax

from relujax._src import allocator

# The results kept in the repository (read by benchmarks/report.py).
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
# Where a run writes without --out: relative, so under the current directory (from a checkout's
# root, the folder above); never inside an installed package.
DEFAULT_OUT_DIR = pathlib.Path("benchmarks", "results")


def block(value: Any) -> Any:
    """Waits for a JAX (or PyTorch) computation to finish; returns its argument."""
    leaves = jax.tree.leaves(value)
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    torch = _torch_or_none()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
    return value


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def time_alternating(
    fns: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    warmup: int = 2,
    max_seconds: float | None = None,
    settle: int = 0,
) -> dict[str, dict[str, float]]:
    """Medians of ``fns`` timed in turn, in seconds.

    Each function takes no argument and returns what must be waited for (it is passed to
    :func:`block`). After ``warmup`` untimed rounds, ``repeats`` rounds call every function once
    each, in order, so slow spells of a shared machine hit all candidates alike. With
    ``max_seconds`` the rounds stop early (after at least 3) once that much time has passed.
    ``settle`` > 0 makes each turn call its function that many times untimed before the timed
    call: the timed call then finds its own data in the caches and no other library's threads
    still spinning (PyTorch's OpenMP workers busy-wait after a parallel region), which matters
    when candidates of different libraries alternate in one process.

    Returns ``{name: {"median": s, "min": s, "n": rounds, "samples": [...]}}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            block(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for i in range(repeats):
        for name, fn in fns.items():
            for _ in range(settle):
                block(fn())
            t0 = time.perf_counter()
            block(fn())
            samples[name].append(time.perf_counter() - t0)
        if max_seconds is not None and i >= 2 and time.perf_counter() - start > max_seconds:
            break
    return {
        name: {
            "median": statistics.median(s),
            "min": min(s),
            "n": len(s),
            "samples": [round(v, 6) for v in s],
        }
        for name, s in samples.items()
    }


@contextlib.contextmanager
def direct_convs() -> Iterator[None]:
    """While it is open, what is compiled computes relujax's native convolutions directly, not
    as Winograd (``RELUJAX_NATIVE_WINOGRAD=0``, read when a convolution is lowered): the A/B of
    that path. Trace, lower and compile inside it."""
    saved = os.environ.get("RELUJAX_NATIVE_WINOGRAD")
    os.environ["RELUJAX_NATIVE_WINOGRAD"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RELUJAX_NATIVE_WINOGRAD", None)
        else:
            os.environ["RELUJAX_NATIVE_WINOGRAD"] = saved


def compile_jitted(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``jitted.lower(*args).compile()`` and the seconds it took (trace + lower + compile)."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - t0


def memory_analysis(compiled: Any) -> dict[str, int] | None:
    """XLA's compiled memory analysis (bytes): arguments, outputs, temporaries, generated code."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if ma is None:
        return None
    keys = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
        "alias_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    return {k.replace("_size_in_bytes", ""): int(getattr(ma, k, 0) or 0) for k in keys}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The AVX-512 / AMX / BF16 flags of this CPU (what decides bf16 support on CPU)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))
    except OSError:
        pass
    return []


def machine_info() -> dict[str, Any]:
    """Where and with what a result was measured."""
    import flax
    import jaxlib
    import numpy
    import optax

    torch = _torch_or_none()
    devices = jax.devices()
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in devices],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "torch_cuda": None if torch is None else torch.cuda.is_available(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "allocator": allocator.describe(),
    }
    return info


def parser(description: str) -> argparse.ArgumentParser:
    """The command line every benchmark shares: ``--quick``, ``--repeats``, ``--out``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests / make bench")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default per script)")
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="JSON path (default ./benchmarks/results/NAME.json under the current directory)",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
    return p


def write_json(
    name: str,
    payload: Mapping[str, Any],
    *,
    quick: bool,
    out: pathlib.Path | None,
    argv: Sequence[str] | None = None,
):
    """Writes ``payload``, machine info and the command's arguments (``argv``, default
    ``sys.argv[1:]``: what RESULTS.md reprints as the command) to ``out`` or
    ``DEFAULT_OUT_DIR/<name>[_quick].json``."""
    path = out or DEFAULT_OUT_DIR / f"{name}{'_quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "quick": quick, "machine": machine_info()}
    doc["argv"] = list(sys.argv[1:] if argv is None else argv)
    doc.update(payload)
    path.write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    print(f"\nwrote {path}")
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows`` (floats to 3 significant figures)."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            if v != v:  # nan
                return "-"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def header(title: str) -> None:
    """Prints the machine line a table is read with."""
    info = machine_info()
    print(
        f"# {title}\n{info['cpu']} ({info['cpu_count']} cores), backend {info['backend']} "
        f"{info['devices'][0]}, jax {info['jax']}, flax {info['flax']}, torch {info['torch']}, "
        f"allocator {info['allocator']}, load {info['load_average']}\n"
    )


def torch_available() -> bool:
    """True when PyTorch can be imported."""
    return _torch_or_none() is not None


def torch_device() -> str:
    """``"cuda"`` when PyTorch sees a GPU (benchmarks then compare on it), else ``"cpu"``."""
    torch = _torch_or_none()
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
