"""A stack of identical blocks, unrolled or scanned, optionally one block repeated (shared).

Why both constructions: a ``jax.lax.scan`` over the blocks' stacked parameters compiles in
constant time (~5 s for NetResDeep at 10, 100 or 200 blocks on XLA:CPU), an unrolled stack in time
linear in depth (~0.4 s per block) but, on XLA:CPU, runs each step faster even with the
canonical-backward conv that scanned stacks use there (stock conv backward inside a loop is ~80x
slower). For training runs of more than a few dozen steps unrolled wins on CPU, so it is the CPU
default; on GPU/TPU the scan is the default. ``scan=None`` asks
:func:`relujax.policy.scan_blocks`; both give the same parameters from the same ``rngs``
(scanned blocks are built one by one, then stacked), so results agree to round-off.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src import policy
from relujax._src.models.monitor import Activation


def _fast_conv(block: nnx.Module) -> None:
    """Scanned convs: relujax's convolution where the policy picks it (see ``_src/perf.py``).

    The models' own convs already use it; this covers blocks whose ``nnx.Conv`` layers were
    built elsewhere. Without it the conv backward inside a scan on XLA:CPU is ~80x slower.
    """
    if policy.fast_conv():
        from relujax._src import perf

        perf.use_fast_conv(block)


class BlockStack(nnx.Module):
    """Applies ``len(blocks)`` structurally identical blocks in sequence.

    - ``shared=False, scan=False``: ``self.blocks`` is an ``nnx.List`` of independent blocks.
    - ``shared=False, scan=True``: ``self.stacked`` is ONE block whose every variable has a leading
      axis of size ``n``; the forward pass is a ``jax.lax.scan`` over it.
    - ``shared=True``: ``self.block`` is one block applied ``n`` times (one set of weights and
      BatchNorm statistics), in a Python loop or, with ``scan=True``, a ``jax.lax.scan``.

    ``torch_offset`` is the PyTorch index of the first block (``relujax.interop`` maps block ``i``
    to ``<prefix>.<torch_offset + i>``). ``stack(x, mask=m)`` calls every block as
    ``block(x, mask=m)`` (the row mask of a padded batch, for BatchNorm); ``mask=None`` calls
    ``block(x)``, so blocks that take no mask work too.
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
        scan = policy.scan_blocks() if scan is None else bool(scan)
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
            if scan:
                _fast_conv(self.block)
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
        _fast_conv(self.stacked)
        for _, module in nnx.iter_modules(self.stacked):
            if isinstance(module, Activation):
                module.stack_shape = (self.n,)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        kw = {} if mask is None else {"mask": mask}
        if not self.scan:
            for block in [self.block] * self.n if self.shared else self.blocks:
                x = block(x, **kw)
            return x
        module = self.block if self.shared else self.stacked
        graphdef, state = nnx.split(module)
        leaves, treedef = jax.tree.flatten(state)
        changed: list[bool] = []  # which leaves the block writes (BN stats, rng counts, ...)

        def apply(h, block_leaves):
            blk = nnx.merge(graphdef, jax.tree.unflatten(treedef, block_leaves))
            h = blk(h, **kw)
            new_leaves = jax.tree.leaves(nnx.state(blk))
            changed[:] = [a is not b for a, b in zip(block_leaves, new_leaves, strict=True)]
            return h, new_leaves

        if self.shared:

            def shared_body(carry, _):
                return apply(*carry), None

            (x, new_leaves), _ = jax.lax.scan(shared_body, (x, leaves), None, length=self.n)
        else:

            def body(h, block_leaves):
                h, new_leaves = apply(h, block_leaves)
                return h, [v for v, c in zip(new_leaves, changed, strict=True) if c]

            x, written = jax.lax.scan(body, x, leaves)
            written = iter(written)
            new_leaves = [next(written) if c else None for c in changed]
        # Write back only what the blocks changed: Params stay untouched, so a scanned model in
        # eval mode can be used inside plain jax transforms, as an unrolled one can.
        variables = jax.tree.leaves(
            nnx.state(module), is_leaf=lambda v: isinstance(v, nnx.Variable)
        )
        for var, value, c in zip(variables, new_leaves, changed, strict=True):
            if c:
                var.set_value(value)
        return x
