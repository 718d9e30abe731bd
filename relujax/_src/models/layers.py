"""Building blocks shared by the models: PyTorch-initialised Conv/Linear, PyTorch BatchNorm.

The layers are Flax's ``nnx.Conv`` / ``nnx.Linear`` with PyTorch's default initialisation and
explicit padding (Flax's ``"SAME"`` pads stride-2 convolutions asymmetrically, PyTorch does not),
and a BatchNorm with PyTorch's exact semantics, which ``nnx.BatchNorm`` does not have: momentum
0.1 on the new value, eps 1e-5, and the running variance updated with the UNBIASED batch
variance (the normalisation itself uses the biased one).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src import perf, policy
from relujax._src.dtypes import promote

Dtype = jnp.dtype | type | None


def torch_default_init(fan_in: int) -> nnx.Initializer:
    """PyTorch's default for Conv/Linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_normal(mode: str = "fan_in") -> nnx.Initializer:
    """``torch.nn.init.kaiming_normal_(w, mode=mode, nonlinearity="relu")``: N(0, 2 / fan)."""
    return nnx.initializers.variance_scaling(2.0, mode, "normal")


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    padding: int | None = None,
    use_bias: bool = True,
    kernel_init: nnx.Initializer | None = None,
    dtype: Dtype = None,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A square ``nnx.Conv`` (HWIO kernel) with PyTorch's padding and default initialisation.

    Its convolution is the one :func:`relujax.policy.fast_conv` picks: on CPU relujax's
    (``relujax._src.perf.conv_general_dilated``: native kernels, every AD mode), elsewhere
    ``lax.conv_general_dilated``.
    """
    pad = kernel_size // 2 if padding is None else padding
    fan_in = in_channels * kernel_size * kernel_size
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=kernel_init or torch_default_init(fan_in),
        bias_init=torch_default_init(fan_in),
        dtype=dtype,
        param_dtype=param_dtype,
        conv_general_dilated=(
            perf.conv_general_dilated if policy.fast_conv() else jax.lax.conv_general_dilated
        ),
        rngs=rngs,
    )


def linear(
    in_features: int,
    out_features: int,
    *,
    kernel_init: nnx.Initializer | None = None,
    dtype: Dtype = None,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """``nnx.Linear`` (kernel ``(in, out)``) with PyTorch's default initialisation."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=kernel_init or torch_default_init(in_features),
        bias_init=torch_default_init(in_features),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def max_pool(x: jax.Array, size: int = 2, stride: int | None = None, padding: int = 0):
    """``F.max_pool2d`` on NHWC (floor mode; padding with -inf).

    Non-overlapping windows without padding (the book's ``max_pool2d(x, 2)``) use
    ``perf.max_pool`` where :func:`relujax.policy.fast_pool` says so (CPU): same values and
    derivatives, a faster backward on XLA:CPU.
    """
    s = size if stride is None else stride
    if s == size and padding == 0 and policy.fast_pool():
        return perf.max_pool(x, size)
    return nnx.max_pool(
        x, (size, size), strides=(s, s), padding=((padding, padding), (padding, padding))
    )


class BatchNorm(nnx.Module):
    """``torch.nn.BatchNorm2d``/``BatchNorm1d`` over the last (channel) axis, PyTorch semantics.

    Training mode (``use_running_average=False``, set by ``model.train()``) normalises with the
    batch mean and biased variance and updates the running statistics as PyTorch does:
    ``mean <- (1 - momentum) * mean + momentum * batch_mean`` and the same for ``var`` with the
    unbiased batch variance. Eval mode (``model.eval()``) uses the running statistics. Statistics
    are computed in at least float32 whatever the computation ``dtype``.

    ``mask`` (optional, bool ``(N,)`` over the batch axis) marks the real rows of a padded batch:
    in training mode the batch mean and variance (and the unbiased correction ``n / (n - 1)``,
    ``n`` = real rows x spatial positions) come from the real rows only, so their outputs and
    the running statistics are what PyTorch computes on the real rows alone; padded rows are
    normalised with the same statistics and are garbage to be masked out of the loss. A batch
    with no real row leaves the running statistics unchanged. Eval mode ignores ``mask``;
    ``mask=None`` is the plain, unmasked computation.

    Attributes: ``scale``, ``bias`` (``nnx.Param``), ``mean``, ``var`` (``nnx.BatchStat``).

    Example:
      >>> import jax.numpy as jnp
      >>> from relujax.models import BatchNorm
      >>> bn = BatchNorm(3)
      >>> bn(jnp.ones((4, 2, 2, 3))).shape
      (4, 2, 2, 3)
      >>> real_rows = jnp.arange(4) < 3  # a batch padded from 3 to 4 rows
      >>> bn(jnp.ones((4, 2, 2, 3)), mask=real_rows).shape
      (4, 2, 2, 3)
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.1,
        epsilon: float = 1e-5,
        scale_init: float = 1.0,
        use_running_average: bool = False,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.dtype = dtype
        self.scale = nnx.Param(jnp.full((num_features,), scale_init, param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        if x.shape[-1] != self.num_features:
            raise ValueError(
                f"BatchNorm: expected {self.num_features} channels on the last axis (NHWC), "
                f"got input shape {x.shape}."
            )
        if mask is not None:
            _check_mask(mask, x)
        dtype = self.dtype or promote(x.dtype, self.scale[...].dtype)
        stat_dtype = promote(x.dtype, jnp.float32)
        xs = x.astype(stat_dtype)
        axes = tuple(range(x.ndim - 1))
        if self.use_running_average:
            mean = self.mean[...].astype(stat_dtype)
            var = self.var[...].astype(stat_dtype)
        else:
            if mask is None:
                mean = jnp.mean(xs, axis=axes)
                var = jnp.mean(jnp.square(xs - mean), axis=axes)
                n = x.size // self.num_features
                unbiased = var * (n / max(n - 1, 1))
                any_real = None
            else:
                rows = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
                per_row = x.size // (self.num_features * x.shape[0])
                n = jnp.sum(mask, dtype=jnp.int32).astype(stat_dtype) * per_row
                count = jnp.maximum(n, 1)
                mean = jnp.sum(jnp.where(rows, xs, 0), axis=axes) / count
                var = jnp.sum(jnp.where(rows, jnp.square(xs - mean), 0), axis=axes) / count
                unbiased = var * (n / jnp.maximum(n - 1, 1))
                any_real = n > 0
            m = self.momentum
            old_mean, old_var = self.mean[...], self.var[...]
            new_mean = (1 - m) * old_mean + m * jax.lax.stop_gradient(mean).astype(old_mean.dtype)
            new_var = (1 - m) * old_var + m * jax.lax.stop_gradient(unbiased).astype(old_var.dtype)
            if any_real is not None:
                new_mean = jnp.where(any_real, new_mean, old_mean)
                new_var = jnp.where(any_real, new_var, old_var)
            self.mean[...] = new_mean
            self.var[...] = new_var
        inv = jax.lax.rsqrt(var + self.epsilon) * self.scale[...].astype(stat_dtype)
        y = (xs - mean) * inv + self.bias[...].astype(stat_dtype)
        return y.astype(dtype)


def _check_mask(mask: jax.Array, x: jax.Array) -> None:
    """Validates a BatchNorm row mask: bool, shape ``(N,)`` with ``N = x.shape[0]``."""
    dtype = getattr(mask, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(
            f"BatchNorm: mask must be a bool array of shape ({x.shape[0]},) marking the real rows, "
            f"got dtype {dtype}; pass e.g. `jnp.arange(N) < n_real`."
        )
    if tuple(mask.shape) != (x.shape[0],):
        raise ValueError(
            f"BatchNorm: mask must have shape ({x.shape[0]},) (the batch axis of x, shape "
            f"{tuple(x.shape)}), got shape {tuple(mask.shape)}."
        )
