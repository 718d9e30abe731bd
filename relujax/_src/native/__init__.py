"""Native CPU convolution kernels for XLA, built from ``conv.cc`` on first use.

XLA:CPU (jaxlib 0.10.2) runs convolutions with Eigen or YNNPACK; for a ResBlock's kernel
gradient both need a transposed copy of the input and the cotangent first, and neither
reaches what the same machine does in PyTorch's oneDNN. ``conv.cc`` holds register-blocked
direct convolutions (forward, which also serves the input gradient, and kernel gradient) for
stride-1 NHWC/HWIO float32, called through XLA's FFI and sharing XLA's intra-op thread pool.

The library is compiled once per machine with the system C++ compiler (``$CXX``, else ``g++``
or ``c++``) and ``-march=native`` into ``$RELUJAX_CACHE`` (default ``~/.cache/relujax``)
``/native/``, keyed by the source, the compiler, jaxlib and the CPU; a later process loads it
in milliseconds. Without a compiler, on a build error, off CPU, or with ``RELUJAX_NATIVE=0``
in the environment, :func:`available` is ``False`` and callers keep XLA's convolutions
(``relujax._src.perf`` does this per convolution).

Example (on a CPU with a C++ compiler; the first call builds the library):
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
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

__all__ = [
    "available",
    "build_error",
    "conv",
    "conv_kernel_grad",
    "lanes",
    "library_path",
    "supports",
]

_SOURCE = pathlib.Path(__file__).with_name("conv.cc")
_TARGETS = {
    "relujax_conv": "RelujaxConvForward",
    "relujax_conv_kernel_grad": "RelujaxConvKernelGrad",
}
_error: str | None = None


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_id() -> str:
    # The library is built for this CPU (-march=native); a cache shared between machines
    # must not hand it to another one.
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flags() -> list[str]:
    return ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]


def library_path(cxx: str) -> pathlib.Path:
    """Where the library built by ``cxx`` for this machine lives (it may not exist yet)."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = "\n".join(
        [_SOURCE.read_text(), cxx, version, " ".join(_flags()), jaxlib.__version__, _cpu_id()]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = pathlib.Path(os.environ.get("RELUJAX_CACHE", pathlib.Path.home() / ".cache/relujax"))
    return root / "native" / f"relujax_conv_{digest}.so"


def _build(cxx: str, out: pathlib.Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: concurrent processes (pytest-xdist workers)
    # never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *_flags(), "-I", jax.ffi.include_dir(), str(_SOURCE), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _library() -> ctypes.CDLL | None:
    global _error
    if os.environ.get("RELUJAX_NATIVE", "1") == "0":
        _error = "disabled by RELUJAX_NATIVE=0"
        return None
    cxx = _compiler()
    if cxx is None:
        _error = "no C++ compiler found ($CXX, g++ or c++)"
        return None
    try:
        path = library_path(cxx)
        if not path.exists():
            _build(cxx, path)
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            capsule = jax.ffi.pycapsule(getattr(lib, symbol))
            jax.ffi.register_ffi_target(target, capsule, platform="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means: keep XLA's convolutions
        _error = f"{type(e).__name__}: {e}"
        warnings.warn(
            f"relujax: native CPU convolutions unavailable, using XLA's ({_error})", stacklevel=3
        )
        return None
    return lib


def build_error() -> str | None:
    """Why :func:`available` is ``False`` (``None`` when it is ``True`` or was not asked yet)."""
    return _error


def available() -> bool:
    """Whether the native kernels can be used: CPU backend, library built and loaded."""
    return jax.default_backend() == "cpu" and _library() is not None


@functools.cache
def lanes() -> int:
    """The kernels' vector width in floats (16 with AVX-512, 8 with AVX2, 4 otherwise).

    Output channels must be a multiple of it. 8 when the library is unavailable.
    """
    lib = _library()
    if lib is None:
        return 8
    lib.RelujaxConvLanes.restype = ctypes.c_int64
    return int(lib.RelujaxConvLanes())


Pads = Sequence[tuple[int, int]]


def _attrs(pads: Pads) -> dict[str, np.int64]:
    (top, bottom), (left, right) = pads
    return {
        "top": np.int64(top),
        "bottom": np.int64(bottom),
        "left": np.int64(left),
        "right": np.int64(right),
    }


def supports(x_shape, kernel_shape, pads: Pads, dtype) -> bool:
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
    return ok_pads and fits and out % lanes() == 0 and available()


def _out_hw(x_shape, kh: int, kw: int, pads: Pads) -> tuple[int, int]:
    (top, bottom), (left, right) = pads
    return x_shape[1] + top + bottom - kh + 1, x_shape[2] + left + right - kw + 1


def conv(x: jax.Array, kernel: jax.Array, pads: Pads) -> jax.Array:
    """Stride-1 convolution of NHWC ``x`` with HWIO ``kernel``, zero ``pads`` ((t, b), (l, r)).

    Equal to ``lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=("NHWC",
    "HWIO", "NHWC"))`` up to float rounding. Check :func:`supports` first.
    """
    kh, kw, _, out = kernel.shape
    ho, wo = _out_hw(x.shape, kh, kw, pads)
    shape = jax.ShapeDtypeStruct((x.shape[0], ho, wo, out), x.dtype)
    call = jax.ffi.ffi_call("relujax_conv", shape, vmap_method="sequential")
    return call(x, kernel, **_attrs(pads))


def conv_kernel_grad(
    x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int], pads: Pads
) -> jax.Array:
    """The kernel gradient of :func:`conv`: ``dk[i,j,c,o] = sum x_pad[n,h+i,w+j,c] g[n,h,w,o]``.

    ``g`` is the cotangent of the output (NHWC); returns an HWIO kernel of spatial size
    ``kernel_hw``. Check :func:`supports` (with the kernel's shape) first.
    """
    shape = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1], g.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("relujax_conv_kernel_grad", shape, vmap_method="sequential")
    return call(x, g, **_attrs(pads))
