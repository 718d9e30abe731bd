"""Every model checks its input at trace time: rank, NHWC layout, spatial size.

A wrong input must raise a ValueError that names the model, the expected shape and the fix,
instead of an XLA error from deep inside a convolution or a matmul (or a silently wrong run).
Traced with `jax.eval_shape`, so no model is ever compiled here.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import relujax.models as rm

IMAGE_MODELS = sorted(set(rm.MODELS) - {"simplenn", "mlp"})
FIXED_32 = {"net", "netwidth", "netdropout", "netbatchnorm", "netdepth", "netres", "netresdeep"}
KWARGS = {"netresdeep": {"n_blocks": 2}}


@functools.cache
def _abstract(name):
    """The model with abstract parameters: a refused input raises before any of them is used."""
    return nnx.eval_shape(lambda: rm.create_model(name, rngs=nnx.Rngs(0), **KWARGS.get(name, {})))


def _call(name, shape):
    return _abstract(name)(np.zeros(shape, np.float32))


def _trace(name, shape):
    def forward():
        model = rm.create_model(name, rngs=nnx.Rngs(0), **KWARGS.get(name, {}))
        return model(jnp.zeros(shape, jnp.float32))

    return jax.eval_shape(forward)


def _label(name):
    return "NetResDeep" if name == "netresdeep" else name


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_nchw_batch_names_the_model_and_the_transpose(name):
    with pytest.raises(ValueError) as info:
        _call(name, (2, 3, 32, 32))
    msg = str(info.value)
    assert re.search(r"expected images of shape \(N, (32, 32|H, W), 3\) \(NHWC\)", msg), msg
    assert "got (2, 3, 32, 32)" in msg and "x.transpose(0, 2, 3, 1)" in msg, msg
    assert msg.lower().startswith(_label(name).lower() + ":") or name in msg.lower(), msg


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_single_image_and_grayscale(name):
    with pytest.raises(ValueError, match=r"got \(32, 32, 3\): one image, not a batch.*x\[None\]"):
        _call(name, (32, 32, 3))
    with pytest.raises(ValueError, match=r"got \(2, 32, 32, 1\).*x.repeat\(3, axis=-1\)"):
        _call(name, (2, 32, 32, 1))
    with pytest.raises(ValueError, match=r"got \(2, 1024\); pass a batch of images"):
        _call(name, (2, 1024))


@pytest.mark.parametrize("name", sorted(FIXED_32))
def test_fixed_size_models_refuse_28x28_images(name):
    with pytest.raises(ValueError, match=r"got \(2, 28, 28, 3\).*sized for 32x32 images"):
        _call(name, (2, 28, 28, 3))


def test_the_issue_cases_for_netdepth():
    with pytest.raises(ValueError) as info:
        _call("netdepth", (2, 3, 32, 32))
    assert str(info.value) == (
        "NetDepth: expected images of shape (N, 32, 32, 3) (NHWC), got (2, 3, 32, 32); "
        "relujax models take NHWC: x.transpose(0, 2, 3, 1)"
    )


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_global_pool_resnets_take_any_size(name):
    assert _trace(name, (1, 40, 40, 3)).shape[0] == 1


@pytest.mark.parametrize("name, features", [("simplenn", 4), ("mlp", 784)])
def test_vector_models(name, features):
    with pytest.raises(ValueError, match=r"flatten the images: x.reshape\(x.shape\[0\], -1\)"):
        _call(name, (2, 28, 28, 1) if features == 784 else (2, 2, 2))
    with pytest.raises(
        ValueError, match=rf"expected inputs of shape \(N, {features}\), got \(2, 5\)"
    ):
        _call(name, (2, 5))
    assert _trace(name, (3, features)).shape[0] == 3


def test_checks_hold_under_jit_and_vmap():
    model = _abstract("netdepth")
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(nnx.jit(lambda m, x: m(x)), model, jnp.zeros((2, 3, 32, 32)))

    def batched():  # vmap over a leading axis of batches: the model sees (N, 32, 32, 3)
        m = rm.create_model("netdepth", rngs=nnx.Rngs(0))
        return nnx.vmap(lambda x: m(x))(jnp.zeros((2, 4, 32, 32, 3)))

    assert jax.eval_shape(batched).shape == (2, 4, 2)
