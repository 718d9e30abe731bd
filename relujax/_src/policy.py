"""The speed policy: the one place that decides, per backend, which implementation runs.

Models, the training application and the benchmarks ask this module; nothing else looks at the
backend. The choices (the measurements behind them are in ``benchmarks/RESULTS.md``):

* ``conv``: which convolution the models' ``nnx.Conv`` layers use. On CPU, relujax's
  convolution primitive (:func:`relujax._src.perf.conv_general_dilated`): it lowers to
  relujax's native kernels where they apply and to XLA's convolutions in canonical NHWC/HWIO
  form elsewhere (XLA:CPU runs the convolutions that ``lax``'s own derivative emits inside a
  ``scan`` with a naive loop). On GPU/TPU, ``lax.conv_general_dilated`` unchanged. Either
  supports ``jvp``, ``grad``, ``vmap`` and their compositions.
* ``native``: whether relujax's native CPU kernels (``relujax._src.native``) run: CPU backend,
  one device (XLA cannot split a custom call over devices), an x86-64 CPU, a C++ compiler,
  ``RELUJAX_NATIVE`` not ``0``; ``native_isa`` is the vector width built for; ``winograd``
  whether they compute 3x3 convolutions as Winograd (``RELUJAX_NATIVE_WINOGRAD`` not ``0``).
* ``compiler_options``: XLA compile options for training steps. On CPU, XLA's convolutions go
  to Eigen rather than YNNPACK (reductions and dots stay with YNNPACK): faster for the
  convolutions that do not run natively. Pass them with :func:`jit`.
* ``scan_blocks``: whether deep stacks of identical blocks are scanned (GPU/TPU) or unrolled
  (CPU, where the unrolled step runs faster; a scanned one compiles in constant time in depth).
* ``fast_pool``: non-overlapping max pooling as a reshape and a max with an explicit
  derivative (CPU, where XLA expands ``lax.reduce_window``'s derivative into a scatter).
* :func:`sync_each_step`: whether a training loop waits for each step (CPU with several
  devices, where XLA:CPU's all-reduce of queued steps can deadlock). Not part of ``describe``.
* ``allocator``: the memory allocator this process runs with (``tcmalloc``, ``glibc+hugetlb``
  or ``system``). It is fixed when the process starts, so the policy only reports it; the
  command-line entry points relaunch under a page-keeping one (``relujax._src.allocator``).

:func:`override` makes the choices of another backend apply while models and steps are built,
e.g. to export a GPU or TPU training step from a CPU machine.

Example:
    >>> from relujax import policy
    >>> policy.describe("tpu")["scan_blocks"], policy.describe("tpu")["conv"]
    (True, 'lax')
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from relujax._src import allocator

BACKENDS = ("cpu", "gpu", "tpu")
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "relujax_policy", default=None
)

# YNNPACK keeps the fusions it is best at (reductions, dots); convolutions fall to Eigen.
_CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_DOT"
}


@dataclasses.dataclass(frozen=True)
class Policy:
    """What runs on ``backend``; see the module docstring for each field."""

    backend: str
    conv: str  # "relujax" (relujax's convolution primitive) or "lax"
    native: bool
    native_isa: str | None
    native_reason: str | None  # why ``native`` is False
    winograd: bool
    compiler_options: dict[str, str] | None
    scan_blocks: bool
    fast_pool: bool
    allocator: str

    def describe(self) -> dict[str, Any]:
        """The choices as a JSON-serialisable dict (as ``summary.json`` records them)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        native = f"native {self.native_isa}" if self.native else f"XLA ({self.native_reason})"
        native += " (3x3 as Winograd)" if self.native and self.winograd else ""
        options = ", ".join(f"{k}={v}" for k, v in (self.compiler_options or {}).items())
        return (
            f"{self.backend}: conv={self.conv}, convolutions {native}, "
            f"{'scanned' if self.scan_blocks else 'unrolled'} stacks, "
            f"{'fast' if self.fast_pool else 'stock'} pool, allocator {self.allocator}, "
            f"compile options: {options or 'none'}"
        )


def default_backend() -> str:
    """The backend the policy applies to: an :func:`override`, else JAX's default platform.

    ``"cpu"``, ``"gpu"`` (CUDA or ROCm) or ``"tpu"``.
    """
    forced = _override.get()
    if forced is not None:
        return forced
    platform = jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def _backend(backend: str | None) -> str:
    backend = default_backend() if backend is None else backend
    backend = "gpu" if backend in ("cuda", "rocm") else backend
    if backend not in BACKENDS:
        raise ValueError(f"policy: backend must be one of {BACKENDS} (or None), got {backend!r}")
    return backend


@contextlib.contextmanager
def override(backend: str) -> Iterator[None]:
    """Within the block, models and steps are built with the choices for ``backend``.

    Example:
        >>> from relujax import policy
        >>> with policy.override("gpu"):
        ...     policy.scan_blocks()
        True
    """
    token = _override.set(_backend(backend))
    try:
        yield
    finally:
        _override.reset(token)


@functools.cache
def _cpu_options_accepted() -> bool:
    # The flag is experimental: an XLA that no longer knows it (or its values) rejects the
    # compile; then the defaults are used rather than failing every training step.
    try:
        jax.jit(lambda v: v + 1).lower(jnp.zeros(2)).compile(compiler_options=_CPU_OPTIONS)
    except Exception:  # noqa: BLE001 - any rejection means "not supported here"
        return False
    return True


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """XLA compile options for training steps on ``backend`` (default: the current), or ``None``.

    On CPU, XLA's convolutions run with Eigen instead of YNNPACK. ``None`` on GPU/TPU and on a
    CPU whose XLA rejects the (experimental) option. :func:`jit` passes them.

    Example:
        >>> compiler_options("gpu") is None
        True
    """
    if _backend(backend) != "cpu" or jax.default_backend() != "cpu":
        return None
    return dict(_CPU_OPTIONS) if _cpu_options_accepted() else None


def fast_conv(backend: str | None = None) -> bool:
    """Whether models use relujax's convolution (on CPU) rather than ``lax``'s."""
    return _backend(backend) == "cpu"


def native_convs(backend: str | None = None) -> bool:
    """Whether relujax's native CPU kernels run the convolutions they support.

    CPU backend, one device, and the native library built and loaded (which needs an x86-64
    CPU, a C++ compiler and ``RELUJAX_NATIVE`` not ``0``). Building happens on the first call.
    """
    return _native_reason(_backend(backend)) is None


def _native_reason(backend: str) -> str | None:
    from relujax._src import native

    if backend != "cpu" or jax.default_backend() != "cpu":
        return f"the {backend} backend runs XLA's convolutions"
    if jax.device_count() != 1:
        return f"{jax.device_count()} devices: XLA cannot split a custom call over devices"
    if not native.available():
        return native.build_error() or "unavailable"
    return None


def scan_blocks(backend: str | None = None) -> bool:
    """Whether a deep stack of identical blocks is scanned (``True``) or unrolled.

    Unrolled on CPU, where the step runs faster (a scanned stack compiles in constant time in
    depth); scanned on GPU/TPU.

    Example:
        >>> scan_blocks("cpu"), scan_blocks("gpu")
        (False, True)
    """
    return _backend(backend) != "cpu"


def fast_pool(backend: str | None = None) -> bool:
    """Whether non-overlapping max pooling uses ``perf.max_pool`` (CPU) or ``nnx.max_pool``."""
    return _backend(backend) == "cpu"


def sync_each_step(n_devices: int, backend: str | None = None) -> bool:
    """Whether a training loop over ``n_devices`` devices waits for each step to finish.

    On CPU with several (virtual) devices: XLA:CPU can deadlock in the all-reduce of
    back-to-back asynchronously dispatched steps when cores are few. Elsewhere steps queue up.

    Example:
        >>> sync_each_step(1, "cpu"), sync_each_step(4, "gpu")
        (False, False)
    """
    return n_devices > 1 and _backend(backend) == "cpu" and jax.default_backend() == "cpu"


def current(backend: str | None = None) -> Policy:
    """The :class:`Policy` for ``backend`` (default: :func:`default_backend`)."""
    from relujax._src import native

    backend = _backend(backend)
    reason = _native_reason(backend)
    return Policy(
        backend=backend,
        conv="relujax" if fast_conv(backend) else "lax",
        native=reason is None,
        native_isa=native.default_isa() if reason is None else None,
        native_reason=reason,
        winograd=reason is None and native.winograd_default(),
        compiler_options=compiler_options(backend),
        scan_blocks=scan_blocks(backend),
        fast_pool=fast_pool(backend),
        allocator=allocator.describe(),
    )


def describe(backend: str | None = None) -> dict[str, Any]:
    """One call that says what runs: :func:`current`'s choices as a dict.

    Example:
        >>> sorted(describe("gpu"))  # doctest: +NORMALIZE_WHITESPACE
        ['allocator', 'backend', 'compiler_options', 'conv', 'fast_pool', 'native',
         'native_isa', 'native_reason', 'scan_blocks', 'winograd']
    """
    return current(backend).describe()


def jit(fun: Callable | None = None, **kwargs: Any) -> Any:
    """``jax.jit`` with :func:`compiler_options` for the current backend added.

    The one call that gives a user's step the compile options ``python -m train`` uses
    (``nnx.jit`` takes none; jit a function of ``nnx.split`` state with this instead, or pass
    ``compiler_options=policy.compiler_options()`` to ``jax.jit``). Usable as a decorator, with
    or without arguments.

    Example:
        >>> import jax.numpy as jnp
        >>> from relujax import policy
        >>> policy.jit(lambda x: x * 2)(jnp.ones(2))
        Array([2., 2.], dtype=float32)
    """
    options = {**(compiler_options() or {}), **(kwargs.pop("compiler_options", None) or {})}
    if options:
        kwargs["compiler_options"] = options
    if fun is None:
        return functools.partial(jax.jit, **kwargs)
    return jax.jit(fun, **kwargs)
