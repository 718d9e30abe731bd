"""Native CPU convolution kernels for XLA, built from ``conv.cc`` on first use.

XLA:CPU (jaxlib 0.10.2) runs convolutions with Eigen or YNNPACK; for a ResBlock's kernel
gradient both need a transposed copy of the input and the cotangent first. ``conv.cc`` holds
register-blocked direct convolutions (forward, which also serves the input gradient, and kernel
gradient) for stride-1 NHWC/HWIO float32, called through XLA's FFI and sharing XLA's intra-op
thread pool. Whether they are used is decided by :mod:`relujax.policy`, not here.

What a user needs: an x86-64 CPU and a C++17 compiler (``$CXX``, else ``g++`` or ``c++``).
The library is compiled once per machine and vector width into ``$RELUJAX_CACHE`` (default
``~/.cache/relujax``) ``/native/``, keyed by the source, the compiler, the flags, jaxlib and
the CPU; a later process loads it in milliseconds. Without a compiler, on another CPU
architecture, on a build error or with ``RELUJAX_NATIVE=0``, :func:`available` is ``False``,
:func:`build_error` says why, and XLA's convolutions run instead.

3x3 convolutions whose input channels fill whole vectors (:func:`winograd_applies`) run as
Winograd F(2x2, 3x3) (forward, input gradient) and F(3x3, 2x2) (kernel gradient): 2.25x fewer
multiply-adds, unless ``RELUJAX_NATIVE_WINOGRAD=0``.

Vector widths (``isa``): ``"sse"`` (4 floats), ``"avx2"`` (8; AVX/AVX2), ``"avx512"`` (16).
By default the widest this CPU executes; ``RELUJAX_NATIVE_ISA`` picks another one, and every
function takes ``isa=`` so that tests can build and run each width the CPU executes
(:func:`isas`).

Example (on an x86-64 CPU with a C++ compiler; the first call builds the library):
    >>> import jax.numpy as jnp
    >>> from relujax._src import native
    >>> native.available(), native.build_error()  # doctest: +SKIP
    (True, None)
    >>> k = jnp.ones((3, 3, 3, native.lanes()))
    >>> y = native.conv(jnp.ones((1, 4, 4, 3)), k, ((1, 1), (1, 1)))  # doctest: +SKIP
    >>> float(y[0, 1, 1, 0]), float(y[0, 0, 0, 0])  # doctest: +SKIP
    (27.0, 12.0)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

__all__ = [
    "ISAS",
    "available",
    "build_error",
    "conv",
    "conv_kernel_grad",
    "default_isa",
    "isas",
    "lanes",
    "library_path",
    "supports",
    "winograd_applies",
    "winograd_default",
]

ISAS = ("sse", "avx2", "avx512")
_LANES = {"sse": 4, "avx2": 8, "avx512": 16}
# -march=native, then the wider extensions switched off: one source, one width per build.
_ISA_FLAGS = {"sse": ["-mno-avx"], "avx2": ["-mno-avx512f"], "avx512": []}
_CPU_FLAG = {"sse": "sse2", "avx2": "avx", "avx512": "avx512f"}  # /proc/cpuinfo flag needed

_SOURCE = pathlib.Path(__file__).with_name("conv.cc")
_errors: dict[str, str] = {}
_warned = False


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def _cpu_id() -> str:
    # The library is built for this CPU (-march=native); a cache shared between machines
    # must not hand it to another one.
    return " ".join(_cpu_flags()) or platform.processor() or platform.machine()


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def isas() -> tuple[str, ...]:
    """The vector widths this CPU executes, narrowest first (empty off x86-64).

    Example:
        >>> set(isas()) <= {"sse", "avx2", "avx512"}
        True
    """
    if not _is_x86_64():
        return ()
    flags = set(_cpu_flags())
    if not flags:  # no /proc/cpuinfo: the x86-64 baseline only
        return ("sse",)
    return tuple(isa for isa in ISAS if _CPU_FLAG[isa] in flags)


def default_isa() -> str | None:
    """``$RELUJAX_NATIVE_ISA`` if set, else the widest of :func:`isas` (``None`` if none)."""
    chosen = os.environ.get("RELUJAX_NATIVE_ISA", "").strip().lower()
    if chosen:
        return chosen
    runnable = isas()
    return runnable[-1] if runnable else None


def _resolve(isa: str | None) -> str | None:
    isa = default_isa() if isa is None else isa
    if isa is not None and isa not in ISAS:
        raise ValueError(f"native: isa must be one of {ISAS}, got {isa!r}")
    return isa


def _flags(isa: str) -> list[str]:
    return ["-O3", "-march=native", *_ISA_FLAGS[isa], "-std=c++17", "-shared", "-fPIC", "-w"]


def library_path(cxx: str, isa: str | None = None) -> pathlib.Path:
    """Where the library built by ``cxx`` for this machine and ``isa`` lives (may not exist)."""
    isa = _resolve(isa) or "sse"
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = "\n".join(
        [_SOURCE.read_text(), cxx, version, " ".join(_flags(isa)), jaxlib.__version__, _cpu_id()]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = pathlib.Path(os.environ.get("RELUJAX_CACHE", pathlib.Path.home() / ".cache/relujax"))
    return root / "native" / f"relujax_conv_{isa}_{digest}.so"


def _build(cxx: str, isa: str, out: pathlib.Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: concurrent processes (pytest-xdist workers)
    # never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *_flags(isa), "-I", jax.ffi.include_dir(), str(_SOURCE), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _targets(isa: str) -> dict[str, str]:
    return {
        f"relujax_conv_{isa}": "RelujaxConvForward",
        f"relujax_conv_kernel_grad_{isa}": "RelujaxConvKernelGrad",
    }


def _why_not(isa: str | None) -> str | None:
    if os.environ.get("RELUJAX_NATIVE", "1") == "0":
        return "disabled by RELUJAX_NATIVE=0"
    if not _is_x86_64():
        return f"not an x86-64 CPU ({platform.machine()}): the kernels are x86 vector code"
    if isa is None:
        return "no vector width this CPU executes"
    if isa not in isas():
        return f"this CPU does not execute {isa} code (it executes {', '.join(isas())})"
    if _compiler() is None:
        return "no C++ compiler found ($CXX, g++ or c++)"
    return None


def _notice(reason: str) -> None:
    # One notice per process (a log record, so that test suites that turn warnings into errors
    # still run on machines without a compiler), none when the user switched the kernels off.
    global _warned
    if not _warned and not reason.startswith("disabled by"):
        _warned = True
        logging.getLogger("relujax").warning(
            "relujax: native CPU convolutions unavailable, using XLA's (%s)", reason
        )


@functools.cache
def _library(isa: str | None) -> ctypes.CDLL | None:
    key = isa or "default"
    reason = _why_not(isa)
    if reason is None:
        try:
            cxx = _compiler()
            path = library_path(cxx, isa)
            if not path.exists():
                _build(cxx, isa, path)
            lib = ctypes.cdll.LoadLibrary(str(path))
            lib.RelujaxConvLanes.restype = ctypes.c_int64
            if int(lib.RelujaxConvLanes()) != _LANES[isa]:
                raise RuntimeError(f"built for {lib.RelujaxConvLanes()} lanes, not {isa}")
            for target, symbol in _targets(isa).items():
                capsule = jax.ffi.pycapsule(getattr(lib, symbol))
                jax.ffi.register_ffi_target(target, capsule, platform="cpu")
            return lib
        except Exception as e:  # noqa: BLE001 - any failure means: keep XLA's convolutions
            reason = f"{type(e).__name__}: {e}"
    _errors[key] = reason
    _notice(reason)
    return None


def available(isa: str | None = None) -> bool:
    """Whether the kernels for ``isa`` (default :func:`default_isa`) are built and loaded.

    Builds them on the first call. Says nothing about the backend: :mod:`relujax.policy`
    decides whether a computation uses them.
    """
    try:
        isa = _resolve(isa)
    except ValueError as e:
        _errors["default"] = f"RELUJAX_NATIVE_ISA: {e}"
        return False
    return _library(isa) is not None


def build_error(isa: str | None = None) -> str | None:
    """Why :func:`available` is ``False`` (``None`` when it is ``True`` or was not asked yet)."""
    try:
        key = _resolve(isa) or "default"
    except ValueError:
        key = "default"
    return _errors.get(key, _errors.get("default") if isa is None else None)


def lanes(isa: str | None = None) -> int:
    """The kernels' vector width in floats (16 with AVX-512, 8 with AVX2, 4 with SSE).

    Output channels must be a multiple of it. 8 when no width is known.
    """
    try:
        isa = _resolve(isa)
    except ValueError:
        isa = None
    return _LANES.get(isa, 8)


Pads = Sequence[tuple[int, int]]


def _attrs(pads: Pads) -> dict[str, np.int64]:
    (top, bottom), (left, right) = pads
    return {
        "top": np.int64(top),
        "bottom": np.int64(bottom),
        "left": np.int64(left),
        "right": np.int64(right),
    }


def supports(x_shape, kernel_shape, pads: Pads, dtype, *, isa: str | None = None) -> bool:
    """Whether :func:`conv` takes this stride-1 convolution (else use XLA's).

    float32, 4-D NHWC input and HWIO kernel, each pad in ``[0, kernel size)``, output
    channels a multiple of :func:`lanes`, and the library available.
    """
    if len(x_shape) != 4 or len(kernel_shape) != 4 or jnp.dtype(dtype) != jnp.float32:
        return False
    (top, bottom), (left, right) = pads
    kh, kw, _, out = kernel_shape
    ok_pads = all(0 <= p < k for p, k in ((top, kh), (bottom, kh), (left, kw), (right, kw)))
    fits = x_shape[1] + top + bottom >= kh and x_shape[2] + left + right >= kw
    return ok_pads and fits and out % lanes(isa) == 0 and available(isa)


def _out_hw(x_shape, kh: int, kw: int, pads: Pads) -> tuple[int, int]:
    (top, bottom), (left, right) = pads
    return x_shape[1] + top + bottom - kh + 1, x_shape[2] + left + right - kw + 1


def winograd_default() -> bool:
    """Whether :func:`conv` uses Winograd where it applies: yes unless
    ``RELUJAX_NATIVE_WINOGRAD=0``, read when a convolution is lowered (while a function is
    compiled; what is compiled already keeps its choice)."""
    return os.environ.get("RELUJAX_NATIVE_WINOGRAD", "1").strip() != "0"


def _winograd_arg(winograd: bool | None) -> bool:
    if winograd is None:
        return winograd_default()
    if not isinstance(winograd, bool):
        raise TypeError(f"native: winograd must be a bool or None, got {type(winograd).__name__}")
    return winograd


def winograd_applies(kernel_shape, *, isa: str | None = None) -> bool:
    """Whether :func:`conv` and :func:`conv_kernel_grad` compute this convolution as Winograd.

    3x3 kernels whose input channels are a multiple of :func:`lanes` (the 2.25x fewer
    multiply-adds pay for the tile transforms only on whole vectors); the rest run direct.
    The same rule as ``WinogradApplies`` in ``conv.cc``, which decides.
    """
    kh, kw, c, _ = kernel_shape
    return kh == 3 and kw == 3 and c % lanes(isa) == 0


def conv(
    x: jax.Array,
    kernel: jax.Array,
    pads: Pads,
    *,
    isa: str | None = None,
    winograd: bool | None = None,
) -> jax.Array:
    """Stride-1 convolution of NHWC ``x`` with HWIO ``kernel``, zero ``pads`` ((t, b), (l, r)).

    Equal to ``lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=("NHWC",
    "HWIO", "NHWC"))`` up to float rounding. Check :func:`supports` first. ``winograd=True``
    computes the convolutions of :func:`winograd_applies` as Winograd F(2x2, 3x3) (Lavin and
    Gray, 2016: 16 products per 2x2 output tile and channel pair instead of 36, with transforms
    that only add, subtract and halve); ``False`` always runs the direct convolution; ``None``
    (default): :func:`winograd_default`.
    """
    isa = _resolve(isa)
    winograd = _winograd_arg(winograd)
    kh, kw, _, out = kernel.shape
    ho, wo = _out_hw(x.shape, kh, kw, pads)
    shape = jax.ShapeDtypeStruct((x.shape[0], ho, wo, out), x.dtype)
    call = jax.ffi.ffi_call(f"relujax_conv_{isa}", shape, vmap_method="sequential")
    return call(x, kernel, **_attrs(pads), winograd=np.int64(winograd))


def conv_kernel_grad(
    x: jax.Array,
    g: jax.Array,
    kernel_hw: tuple[int, int],
    pads: Pads,
    *,
    isa: str | None = None,
    winograd: bool | None = None,
) -> jax.Array:
    """The kernel gradient of :func:`conv`: ``dk[i,j,c,o] = sum x_pad[n,h+i,w+j,c] g[n,h,w,o]``.

    ``g`` is the cotangent of the output (NHWC); returns an HWIO kernel of spatial size
    ``kernel_hw``. Check :func:`supports` (with the kernel's shape) first. ``winograd`` as in
    :func:`conv`: where :func:`winograd_applies`, the sum is taken as Winograd F(3x3, 2x2) over
    2x2 blocks of ``g`` (16 products per block and channel pair instead of 36).
    """
    isa = _resolve(isa)
    winograd = _winograd_arg(winograd)
    shape = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1], g.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call(f"relujax_conv_kernel_grad_{isa}", shape, vmap_method="sequential")
    return call(x, g, **_attrs(pads), winograd=np.int64(winograd))
