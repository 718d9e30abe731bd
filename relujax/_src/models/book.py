"""The small networks of "Deep Learning with PyTorch" ch. 8 and of the seed texts, in Flax NNX.

Same layers, names, initialisation and arithmetic as the PyTorch originals, on NHWC inputs. The
first linear layer after a flatten sees H,W,C-ordered features; ``relujax.interop`` permutes
PyTorch's C,H,W-ordered weights accordingly (``torch_flatten`` records the pre-flatten shape).

Every model is called as ``model(x, *, mask=None)``: ``mask`` (bool ``(N,)``) marks the real rows
of a padded batch, so that BatchNorm in training mode takes its statistics from them only (see
``BatchNorm``); models without BatchNorm accept it and ignore it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from relujax._src.models._inputs import check_features, check_images
from relujax._src.models.layers import BatchNorm, Dtype, conv, linear, max_pool
from relujax._src.models.monitor import ActivationLike, activation_factory


class SimpleNN(nnx.Module):
    """fc(in, hidden) -> activation -> fc(hidden, out) (seed 001; relu by default).

    For the PReLU variant pass ``activation=relujax.nn.PReLU`` (or an instance); its slope is
    ``model.act.fn.weight`` (PyTorch: ``act.weight``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import SimpleNN
      >>> SimpleNN(rngs=nnx.Rngs(0))(jnp.ones((5, 4))).shape
      (5, 2)
    """

    def __init__(
        self,
        in_features: int = 4,
        hidden: int = 4,
        out_features: int = 2,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        make_act = activation_factory(activation, "relu", where="SimpleNN")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = linear(in_features, hidden, **kw)
        self.act = make_act(rngs)
        self.fc2 = linear(hidden, out_features, **kw)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        del mask  # no BatchNorm: padded rows only need masking out of the loss
        check_features(type(self).__name__, x, self.fc1.in_features)
        return self.fc2(self.act(self.fc1(x)))


class MLP(SimpleNN):
    """fc(784, hidden) -> activation -> fc(hidden, 10) (seed 003): ``(32, 784) -> (32, 10)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import MLP
      >>> MLP(rngs=nnx.Rngs(0))(jnp.ones((32, 784))).shape
      (32, 10)
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 128,
        out_features: int = 10,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_features,
            hidden,
            out_features,
            activation=activation,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


class _TwoConvNet(nnx.Module):
    """conv(3, c1) -> act -> pool -> conv(c1, c2) -> act -> pool -> fc(8*8*c2, 32) -> act -> fc."""

    def __init__(
        self,
        c1: int,
        c2: int,
        num_classes: int,
        *,
        activation: ActivationLike,
        dropout: float | None = None,
        batchnorm: bool = False,
        dtype: Dtype,
        param_dtype: Dtype,
        rngs: nnx.Rngs,
    ):
        make_act = activation_factory(activation, jnp.tanh, where=type(self).__name__)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.conv1 = conv(3, c1, 3, **kw)
        if batchnorm:
            self.conv1_batchnorm = BatchNorm(c1, **kw)
        self.act1 = make_act(rngs)
        if dropout is not None:
            # Dropout2d: whole channels dropped; NHWC -> broadcast the mask over H and W.
            self.conv1_dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2), rngs=rngs)
        self.conv2 = conv(c1, c2, 3, **kw)
        if batchnorm:
            self.conv2_batchnorm = BatchNorm(c2, **kw)
        self.act2 = make_act(rngs)
        if dropout is not None:
            self.conv2_dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2), rngs=rngs)
        self.fc1 = linear(8 * 8 * c2, 32, **kw)
        self.act3 = make_act(rngs)
        self.fc2 = linear(32, num_classes, **kw)
        self.torch_flatten = (("fc1", (c2, 8, 8)),)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        check_images(type(self).__name__, x, size=32)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        out = self.conv1(x)
        if hasattr(self, "conv1_batchnorm"):
            out = self.conv1_batchnorm(out, mask=mask)
        out = max_pool(self.act1(out), 2)
        if hasattr(self, "conv1_dropout"):
            out = self.conv1_dropout(out)
        out = self.conv2(out)
        if hasattr(self, "conv2_batchnorm"):
            out = self.conv2_batchnorm(out, mask=mask)
        out = max_pool(self.act2(out), 2)
        if hasattr(self, "conv2_dropout"):
            out = self.conv2_dropout(out)
        out = self.act3(self.fc1(_flatten(out)))
        return self.fc2(out)


class Net(_TwoConvNet):
    """The book's first CIFAR-2 convnet: conv 3->16, 16->8, fc 512->32->2, tanh (18,090 params).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import Net
      >>> Net(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            16,
            8,
            num_classes,
            activation=activation,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class NetWidth(_TwoConvNet):
    """``Net`` with ``n_chans1`` and ``n_chans1 // 2`` channels, tanh (38,386 params at 32).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import NetWidth
      >>> NetWidth(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    def __init__(
        self,
        n_chans1: int = 32,
        num_classes: int = 2,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            n_chans1,
            n_chans1 // 2,
            num_classes,
            activation=activation,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class NetDropout(_TwoConvNet):
    """``NetWidth`` with channel dropout (``Dropout2d(p)``) after each pooled conv stage.

    Dropout is active in training mode (``model.train()``, the default) and off after
    ``model.eval()``; it draws from ``rngs``'s ``dropout`` stream (or ``default``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import NetDropout
      >>> NetDropout(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    def __init__(
        self,
        n_chans1: int = 32,
        p: float = 0.4,
        num_classes: int = 2,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"NetDropout: expected dropout probability p in [0, 1), got p={p}.")
        super().__init__(
            n_chans1,
            n_chans1 // 2,
            num_classes,
            activation=activation,
            dropout=p,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class NetBatchNorm(_TwoConvNet):
    """``NetWidth`` with BatchNorm after each conv (before tanh): 38,482 params at 32.

    ``model(x, mask=m)`` in training mode takes the batch statistics from the rows where the
    bool ``(N,)`` mask ``m`` is True only (a padded last batch); see ``BatchNorm``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import NetBatchNorm
      >>> NetBatchNorm(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    def __init__(
        self,
        n_chans1: int = 32,
        num_classes: int = 2,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            n_chans1,
            n_chans1 // 2,
            num_classes,
            activation=activation,
            batchnorm=True,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class NetDepth(nnx.Module):
    """Three conv stages (3->c, c->c/2, c/2->c/2), fc 4*4*c/2 -> 32 -> 2, relu (16,130 params).

    ``NetRes`` is the same network with the third stage ``pool(act(conv3(out)) + out)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import NetDepth
      >>> NetDepth(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    residual = False

    def __init__(
        self,
        n_chans1: int = 32,
        num_classes: int = 2,
        *,
        activation: ActivationLike = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        make_act = activation_factory(activation, "relu", where=type(self).__name__)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        c, h = n_chans1, n_chans1 // 2
        self.dtype = dtype
        self.conv1 = conv(3, c, 3, **kw)
        self.act1 = make_act(rngs)
        self.conv2 = conv(c, h, 3, **kw)
        self.act2 = make_act(rngs)
        self.conv3 = conv(h, h, 3, **kw)
        self.act3 = make_act(rngs)
        self.fc1 = linear(4 * 4 * h, 32, **kw)
        self.act4 = make_act(rngs)
        self.fc2 = linear(32, num_classes, **kw)
        self.torch_flatten = (("fc1", (h, 4, 4)),)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        del mask  # no BatchNorm: padded rows only need masking out of the loss
        check_images(type(self).__name__, x, size=32)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        out = max_pool(self.act1(self.conv1(x)), 2)
        out = max_pool(self.act2(self.conv2(out)), 2)
        branch = self.act3(self.conv3(out))
        out = max_pool(branch + out if self.residual else branch, 2)
        out = self.act4(self.fc1(_flatten(out)))
        return self.fc2(out)


class NetRes(NetDepth):
    """``NetDepth`` with a skip connection around the third conv (16,130 params).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from relujax.models import NetRes
      >>> NetRes(rngs=nnx.Rngs(0))(jnp.ones((2, 32, 32, 3))).shape
      (2, 2)
    """

    residual = True
