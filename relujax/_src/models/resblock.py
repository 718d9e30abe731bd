"""The book's ResBlock and NetResDeep (seed 000, "Deep Learning with PyTorch" ch. 8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src.models._inputs import check_images
from relujax._src.models.layers import BatchNorm, Dtype, conv, kaiming_normal, linear, max_pool
from relujax._src.models.monitor import ActivationLike, activation_factory
from relujax._src.models.stack import BlockStack


class ResBlock(nnx.Module):
    """``act(batch_norm(conv(x))) + x`` with a 3x3 conv, as the book's ResBlock.

    The conv has no bias and a Kaiming-normal kernel (fan_in, relu gain: N(0, 2 / (9 n))); the
    BatchNorm starts with scale 0.5 and bias 0, so each block starts close to the identity.
    ``mask`` (bool ``(N,)``, optional) marks the real rows of a padded batch for the BatchNorm
    statistics in training mode (see ``BatchNorm``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import ResBlock
      >>> ResBlock(8, rngs=nnx.Rngs(0))(jnp.ones((2, 4, 4, 8))).shape
      (2, 4, 4, 8)
    """

    def __init__(
        self,
        n_chans: int,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        make_act = activation_factory(activation, "relu", where="ResBlock")
        self.conv = conv(
            n_chans,
            n_chans,
            3,
            use_bias=False,
            kernel_init=kaiming_normal("fan_in"),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.batch_norm = BatchNorm(n_chans, scale_init=0.5, dtype=dtype, param_dtype=param_dtype)
        self.act = make_act(rngs)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        return self.act(self.batch_norm(self.conv(x), mask=mask)) + x


class NetResDeep(nnx.Module):
    """conv(3, c), act, pool, ``n_blocks`` x ResBlock(c), pool, fc(8*8*c, 32), act, fc.

    ``shared_blocks=True`` reproduces the book's code exactly: its
    ``nn.Sequential(*(n_blocks * [ResBlock(n_chans1)]))`` repeats ONE block object, so all blocks
    share their weights and BatchNorm statistics (75,810 parameters at any depth). That is a quirk
    of the book's code, not its intent (dlwpt-code issue #89); ``shared_blocks=False`` (default)
    gives independent blocks (994,530 parameters at 100 blocks).

    ``scan_blocks`` chooses how the stack is built: ``False`` unrolls it, ``True`` scans over
    stacked parameters (compile time independent of depth), ``None`` asks
    :func:`relujax.policy.scan_blocks`: unrolled on CPU, where it trains faster per step,
    scanned elsewhere. Either way ``jvp``, ``grad`` and ``vmap`` work through the model. Both
    give the same parameters from the same ``rngs``.

    ``model(x, mask=m)``: every block's BatchNorm takes its training-mode statistics from the rows
    where the bool ``(N,)`` mask ``m`` is True only (a padded last batch); see ``BatchNorm``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import NetResDeep
      >>> model = NetResDeep(n_blocks=4, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    def __init__(
        self,
        n_chans1: int = 32,
        n_blocks: int = 100,
        num_classes: int = 2,
        *,
        shared_blocks: bool = False,
        scan_blocks: bool | None = None,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not isinstance(n_blocks, int) or n_blocks < 1:
            raise ValueError(f"NetResDeep: n_blocks must be an int >= 1, got {n_blocks!r}.")
        make_act = activation_factory(activation, "relu", where="NetResDeep")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.conv1 = conv(3, n_chans1, 3, **kw)
        self.act1 = make_act(rngs)
        count = 1 if shared_blocks else n_blocks
        blocks = [ResBlock(n_chans1, activation=activation, **kw) for _ in range(count)]
        self.resblocks = BlockStack(blocks, scan=scan_blocks, shared=shared_blocks, n=n_blocks)
        self.fc1 = linear(8 * 8 * n_chans1, 32, **kw)
        self.act2 = make_act(rngs)
        self.fc2 = linear(32, num_classes, **kw)
        self.torch_flatten = (("fc1", (n_chans1, 8, 8)),)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        check_images("NetResDeep", x, size=32)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        out = max_pool(self.act1(self.conv1(x)), 2)
        out = max_pool(self.resblocks(out, mask=mask), 2)
        out = self.act2(self.fc1(out.reshape(out.shape[0], -1)))
        return self.fc2(out)
