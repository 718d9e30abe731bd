"""relujax.interop without PyTorch: layouts, the flatten permutation, strict errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import relujax.interop
import relujax.models as rm
from relujax.interop import load_torch_state_dict


def _state_dict(model) -> dict[str, np.ndarray]:
    """A random PyTorch-layout state_dict for ``model`` (shapes from the model itself)."""
    from relujax._src.interop import torch_targets

    rng = np.random.default_rng(0)
    out = {}
    for key, targets in torch_targets(model).items():
        shape = targets[0].torch_shape()
        out[key] = np.array(7) if key.endswith("num_batches_tracked") else rng.normal(size=shape)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def test_public_api():
    assert relujax.interop.__all__ == ["load_torch_state_dict"]


def test_layouts_and_flatten_permutation():
    model = rm.NetDepth(n_chans1=8, rngs=nnx.Rngs(0))
    sd = _state_dict(model)
    load_torch_state_dict(model, sd)
    np.testing.assert_array_equal(model.conv1.kernel[...], sd["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.fc2.kernel[...], sd["fc2.weight"].T)
    # fc1 sees NHWC-flattened (H, W, C) features; PyTorch's weight indexes them as (C, H, W).
    c, h, w = 4, 4, 4
    feats = np.random.default_rng(1).normal(size=(2, h, w, c)).astype(np.float32)
    torch_out = feats.transpose(0, 3, 1, 2).reshape(2, -1) @ sd["fc1.weight"].T + sd["fc1.bias"]
    ours = model.fc1(jnp.asarray(feats.reshape(2, -1)))
    np.testing.assert_allclose(ours, torch_out, rtol=1e-5, atol=1e-5)


def test_batchnorm_and_prelu_keys():
    model = rm.NetResDeep(n_chans1=4, n_blocks=2, activation="prelu", rngs=nnx.Rngs(0))
    sd = _state_dict(model)
    assert "resblocks.1.act.weight" in sd and "act1.weight" in sd
    del sd["resblocks.0.batch_norm.num_batches_tracked"]  # optional
    load_torch_state_dict(model, sd)
    bn = model.resblocks.blocks[1].batch_norm
    np.testing.assert_array_equal(bn.var[...], sd["resblocks.1.batch_norm.running_var"])
    np.testing.assert_array_equal(bn.scale[...], sd["resblocks.1.batch_norm.weight"])
    np.testing.assert_array_equal(model.act2.fn.weight[...], sd["act2.weight"])


def test_scanned_and_shared_stacks():
    indep = rm.NetResDeep(n_chans1=4, n_blocks=3, scan_blocks=False, rngs=nnx.Rngs(0))
    sd = _state_dict(indep)
    scanned = rm.NetResDeep(n_chans1=4, n_blocks=3, scan_blocks=True, rngs=nnx.Rngs(1))
    load_torch_state_dict(scanned, sd)
    np.testing.assert_array_equal(
        scanned.resblocks.stacked.conv.kernel[...][2],
        sd["resblocks.2.conv.weight"].transpose(2, 3, 1, 0),
    )
    shared = rm.NetResDeep(n_chans1=4, n_blocks=3, shared_blocks=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'resblocks.1.conv.weight' differs from 'resblocks.0"):
        load_torch_state_dict(shared, sd)
    # The book's state_dict repeats ONE block's tensors under every index: accepted.
    for key in list(sd):
        if key.startswith("resblocks."):
            sd[key] = sd["resblocks.0." + key.split(".", 2)[2]]
    load_torch_state_dict(shared, sd)
    np.testing.assert_array_equal(
        shared.resblocks.block.batch_norm.mean[...], sd["resblocks.2.batch_norm.running_mean"]
    )


def test_strict_errors_list_everything_and_change_nothing():
    model = rm.NetBatchNorm(n_chans1=8, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(model))
    sd = _state_dict(model)
    del sd["conv2.bias"]
    del sd["conv1_batchnorm.running_mean"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["fc2.weight"] = np.zeros((3, 32), np.float32)
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(model, sd)
    msg = str(info.value)
    assert msg.startswith("load_torch_state_dict: the state_dict does not match NetBatchNorm")
    for part in (
        "missing keys: ['conv1_batchnorm.running_mean', 'conv2.bias']",
        "unexpected keys: ['extra.weight']",
        "shape mismatch for 'fc2.weight': model expects (2, 32), got (3, 32)",
    ):
        assert part in msg
    after = jax.tree.map(np.asarray, nnx.state(model))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)


def test_type_error():
    with pytest.raises(TypeError, match="load_torch_state_dict: state_dict must be a mapping"):
        load_torch_state_dict(rm.SimpleNN(rngs=nnx.Rngs(0)), [("fc1.weight", np.eye(4))])
