"""A stack of identical blocks, unrolled or scanned, optionally one block repeated (shared).

Why both constructions: on XLA:CPU the backward pass of a convolution inside ``scan``/``while``
is ~50x slower than unrolled (JAX 0.10, measured on NetResDeep), so the CPU default is a Python
loop over independent blocks, which XLA sees unrolled. On GPU/TPU a ``jax.lax.scan`` over the
blocks' stacked parameters keeps compile time flat in depth. ``scan=None`` picks per
``jax.default_backend()``; both give the same parameters from the same ``rngs`` (scanned blocks
are built one by one, then stacked), so results agree to round-off.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src.models.monitor import Activation


def default_scan() -> bool:
    """Whether deep stacks are scanned by default on this backend (not on CPU)."""
    return jax.default_backend() != "cpu"


class BlockStack(nnx.Module):
    """Applies ``len(blocks)`` structurally identical blocks in sequence.

    - ``shared=False, scan=False``: ``self.blocks`` is an ``nnx.List`` of independent blocks.
    - ``shared=False, scan=True``: ``self.stacked`` is ONE block whose every variable has a leading
      axis of size ``n``; the forward pass is a ``jax.lax.scan`` over it.
    - ``shared=True``: ``self.block`` is one block applied ``n`` times (one set of weights and
      BatchNorm statistics), in a Python loop or, with ``scan=True``, a ``jax.lax.scan``.

    ``torch_offset`` is the PyTorch index of the first block (``relujax.interop`` maps block ``i``
    to ``<prefix>.<torch_offset + i>``).
    """

    def __init__(
        self,
        blocks: Sequence[nnx.Module],
        *,
        scan: bool | None = None,
        shared: bool = False,
        n: int | None = None,
        torch_offset: int = 0,
    ):
        scan = default_scan() if scan is None else bool(scan)
        self.scan = scan
        self.shared = shared
        self.torch_offset = torch_offset
        if shared:
            if len(blocks) != 1 or n is None or n < 1:
                raise ValueError(
                    f"BlockStack: shared=True takes exactly one block and its count n >= 1, got "
                    f"{len(blocks)} block(s) and n={n!r}."
                )
            self.n = n
            self.block = blocks[0]
            return
        if len(blocks) < 1:
            raise ValueError("BlockStack: expected at least one block, got none.")
        self.n = len(blocks)
        if not scan:
            self.blocks = nnx.List(list(blocks))
            return
        graphdef, *_ = nnx.split(blocks[0])
        states = [nnx.state(b) for b in blocks]
        stacked_state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
        self.stacked = nnx.merge(graphdef, stacked_state)
        for _, module in nnx.iter_modules(self.stacked):
            if isinstance(module, Activation):
                module.stack_shape = (self.n,)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.shared:
            if not self.scan:
                for _ in range(self.n):
                    x = self.block(x)
                return x
            graphdef, state = nnx.split(self.block)

            def shared_body(carry, _):
                h, st = carry
                blk = nnx.merge(graphdef, st)
                h = blk(h)
                return (h, nnx.state(blk)), None

            (x, state), _ = jax.lax.scan(shared_body, (x, state), None, length=self.n)
            nnx.update(self.block, state)
            return x
        if not self.scan:
            for block in self.blocks:
                x = block(x)
            return x
        graphdef, state = nnx.split(self.stacked)

        def body(h, st):
            blk = nnx.merge(graphdef, st)
            h = blk(h)
            return h, nnx.state(blk)

        x, state = jax.lax.scan(body, x, state)
        nnx.update(self.stacked, state)
        return x
