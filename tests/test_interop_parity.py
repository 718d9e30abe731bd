"""Parity with the PyTorch originals: same logits and gradients after load_torch_state_dict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import relujax.models as rm
from relujax.interop import load_torch_state_dict
from relujax.nn import PReLU

torch = pytest.importorskip("torch")
tm = pytest.importorskip("torch_models")

torch.set_num_threads(2)


def _randomize_batchnorm(model, gen) -> None:
    """Random BN affine parameters and running statistics, so that loading them matters."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                m.running_mean.normal_(0.0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(7)


def _grads_state_dict(model, state_dict):
    """The gradient of every state_dict entry (buffers: their value), keyed like the state_dict."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return {k: (params[k].grad if k in params else v) for k, v in state_dict.items()}


def _normwise(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _check_parity(jax_model, torch_model, x_nhwc, *, train: bool, tol=2e-5):
    gen = torch.Generator().manual_seed(0)
    _randomize_batchnorm(torch_model, gen)
    state = {k: v.clone() for k, v in torch_model.state_dict().items()}
    load_torch_state_dict(jax_model, state)
    torch_model.train(train)
    if train:
        jax_model.train()
    else:
        jax_model.eval()
    labels = np.arange(x_nhwc.shape[0]) % 2

    xt = torch.tensor(
        np.ascontiguousarray(np.moveaxis(x_nhwc, -1, 1) if x_nhwc.ndim == 4 else x_nhwc)
    )
    xt.requires_grad_(True)
    logits_t = torch_model(xt)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()

    def loss_fn(model, x):
        logits = model(x)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(logp[jnp.arange(x.shape[0]), labels]), logits

    grad_fn = nnx.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
    (loss_j, logits_j), (grads_j, gx_j) = grad_fn(jax_model, jnp.asarray(x_nhwc))

    errors = {"logits": _normwise(logits_j, logits_t.detach().numpy())}
    errors["loss"] = _normwise(loss_j, loss_t.detach().numpy())
    gx_t = xt.grad.numpy()
    errors["grad_x"] = _normwise(gx_j, np.moveaxis(gx_t, 1, -1) if gx_t.ndim == 4 else gx_t)

    # Torch's gradients, mapped through the same layout conversions, into a copy of the model.
    ref = nnx.clone(jax_model)
    load_torch_state_dict(ref, _grads_state_dict(torch_model, torch_model.state_dict()))
    ref_grads = nnx.state(ref, nnx.Param)
    # Normwise over all parameters: some gradients are exactly 0 in exact arithmetic (a conv bias
    # before a training-mode BatchNorm) and only round-off in both frameworks.
    leaves = list(zip(jax.tree.leaves(grads_j), jax.tree.leaves(ref_grads), strict=True))
    scale = max(float(np.max(np.abs(np.asarray(b)))) for _, b in leaves)
    errors["grad_params"] = max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in leaves
    ) / max(scale, 1e-30)
    if train:  # running statistics after one training forward pass (PyTorch: unbiased var)
        stats_ref = nnx.clone(jax_model)
        load_torch_state_dict(stats_ref, torch_model.state_dict())
        pairs = zip(
            jax.tree.leaves(nnx.state(jax_model, nnx.BatchStat)),
            jax.tree.leaves(nnx.state(stats_ref, nnx.BatchStat)),
            strict=True,
        )
        errors["running_stats"] = max((_normwise(a, b) for a, b in pairs), default=0.0)
    print(type(jax_model).__name__, "train" if train else "eval", errors)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"parity errors above {tol}: {bad}"


def _x(shape, seed=0):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape, jnp.float32))


BOOK = [
    ("Net", {}),
    ("NetWidth", {}),
    ("NetBatchNorm", {}),
    ("NetDepth", {}),
    ("NetRes", {}),
]


@pytest.mark.torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", [n for n, _ in BOOK])
def test_book_parity(name, train):
    torch.manual_seed(0)
    jax_model = getattr(rm, name)(rngs=nnx.Rngs(1))
    _check_parity(jax_model, getattr(tm, name)(), _x((4, 32, 32, 3)), train=train)


@pytest.mark.torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_netdropout_parity(train):
    # Dropout masks are random in both frameworks: train-mode parity runs with p=0, the mask
    # itself is tested in test_models.py.
    p = 0.0 if train else 0.4
    torch.manual_seed(0)
    jax_model = rm.NetDropout(p=p, rngs=nnx.Rngs(1))
    _check_parity(jax_model, tm.NetDropout(p=p), _x((4, 32, 32, 3)), train=train)


@pytest.mark.torch
@pytest.mark.parametrize("prelu", [False, True], ids=["relu", "prelu"])
def test_simplenn_parity(prelu):
    torch.manual_seed(0)
    tmodel = tm.SimpleNN(prelu=prelu)
    with torch.no_grad():
        tmodel.fc1.bias[:2] = 0.0  # zero rows of x then hit the kink at exactly 0
        if prelu:
            tmodel.act.weight.fill_(0.3)
    x = np.array(_x((16, 4)))
    x[:4] = 0.0
    jax_model = rm.SimpleNN(activation=PReLU if prelu else None, rngs=nnx.Rngs(1))
    _check_parity(jax_model, tmodel, x, train=True)


@pytest.mark.torch
def test_mlp_parity():
    torch.manual_seed(0)
    _check_parity(rm.MLP(rngs=nnx.Rngs(1)), tm.MLP(), _x((32, 784)), train=True)


@pytest.mark.torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resblock_parity(train):
    torch.manual_seed(0)
    tblock = tm.ResBlock(8)

    class Head(torch.nn.Module):  # logits from a block: flatten + a fixed linear map
        def __init__(self):
            super().__init__()
            self.block = tblock
            self.fc = torch.nn.Linear(8 * 4 * 4, 2)

        def forward(self, x):
            return self.fc(self.block(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    class JHead(nnx.Module):
        def __init__(self):
            self.block = rm.ResBlock(8, rngs=nnx.Rngs(1))
            self.fc = nnx.Linear(8 * 4 * 4, 2, rngs=nnx.Rngs(2))

        def __call__(self, x):
            return self.fc(self.block(x).reshape(x.shape[0], -1))

    _check_parity(JHead(), Head(), _x((4, 4, 4, 8)), train=train)


@pytest.mark.torch
@pytest.mark.parametrize(
    "shared,scan,train",
    [(True, False, True), (True, True, False), (False, False, False), (False, True, True)],
    ids=["shared-train", "shared-scan-eval", "independent-eval", "independent-scan-train"],
)
def test_netresdeep_parity(shared, scan, train):
    torch.manual_seed(0)
    tmodel = tm.NetResDeep(n_chans1=8, n_blocks=3, shared_blocks=shared)
    jax_model = rm.NetResDeep(
        n_chans1=8, n_blocks=3, shared_blocks=shared, scan_blocks=scan, rngs=nnx.Rngs(1)
    )
    _check_parity(jax_model, tmodel, _x((4, 32, 32, 3)), train=train)


@pytest.mark.torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet20_parity(train):
    torch.manual_seed(0)
    # Abstract model: load_torch_state_dict fills every variable, no random init needed.
    jax_model = nnx.eval_shape(lambda: rm.resnet20(rngs=nnx.Rngs(1)))
    _check_parity(jax_model, tm.resnet20(), _x((4, 32, 32, 3)), train=train)


@pytest.mark.torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet18_parity(train):
    torch.manual_seed(0)
    jax_model = nnx.eval_shape(lambda: rm.resnet18(num_classes=10, rngs=nnx.Rngs(1)))
    # Batch 2 at 64x64: layer4's training-mode BatchNorm sees 8 values per channel, and its
    # round-off is amplified accordingly (at 32x32, 2 values, the comparison is ill-conditioned).
    tol = 5e-5 if train else 2e-5
    _check_parity(jax_model, tm.resnet18(num_classes=10), _x((2, 64, 64, 3)), train=train, tol=tol)
