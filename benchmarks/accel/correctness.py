"""Correctness on the device: activation tests, PyTorch parity, scan vs unrolled, a short run.

Each function takes the section's :class:`~benchmarks.accel.common.Budget` and returns a dict
with ``rows`` (one per check, each with ``ok``) that goes into the JSON as it is.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.accel.common import ROOT, Budget, error_record, guarded, load_cifar2, platform

_RESULT = re.compile(r"^(tests/\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")


def _child_platform() -> str:
    """The JAX_PLATFORMS value naming this backend (``"cuda"``/``"rocm"`` for ``"gpu"``)."""
    name = platform()
    if name != "gpu":
        return name
    try:
        version = str(jax.devices()[0].client.platform_version).lower()
    except Exception:  # noqa: BLE001 - API drift: assume CUDA
        version = ""
    return "rocm" if "rocm" in version else "cuda"


def _pytest_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", _child_platform())
    # This process holds most of the device's memory (JAX preallocates 75%): the children
    # allocate on demand from what is left instead of failing to preallocate their own 75%.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _count(logs: list[pathlib.Path]) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    failed: list[str] = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            m = _RESULT.match(line)
            if m:
                counts[m.group(2)] = counts.get(m.group(2), 0) + 1
                if m.group(2) in ("FAILED", "ERROR"):
                    failed.append(m.group(1))
    return counts, failed


def activation_tests(
    budget: Budget, *, quick: bool, out: pathlib.Path, workers: int | None = None
) -> dict[str, Any]:
    """The repository's activation test files, run by pytest in children on this backend.

    The tests are collected once and dealt round-robin to ``workers`` pytest processes run
    side by side (default: half the CPUs, at most 8; on a GPU most of a test's time is
    compiling on the host). ``JAX_PLATFORMS`` is set to the backend found here, so a child
    fails rather than falls back to the CPU. Children still running when the budget ends are
    killed; the tests they reported until then still count (``complete`` is False).
    """
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_activations_*.py"))
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist"]
    base += ["-o", "addopts=", "--tb=line"]
    select: list[str] = []
    if quick:  # one file, the relu tests only: the wiring, not the coverage
        files = [f for f in files if f.endswith("test_activations_values.py")]
        select = ["-k", "relu and not leaky and not prelu and not rrelu"]
    env = _pytest_env()
    row: dict[str, Any] = {"check": "activation tests", "files": files}
    row["jax_platforms"] = env["JAX_PLATFORMS"]
    try:
        collect = subprocess.run(
            base + ["--collect-only", "-q", *select, *files],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(budget.left(), 5.0),
        )
    except subprocess.TimeoutExpired:
        return {"rows": [{**row, "ok": None, "incomplete": "budget", "passed": 0, "failed": 0}]}
    ids = [ln.strip() for ln in collect.stdout.splitlines() if "::" in ln]
    if not ids:
        tail = (collect.stdout + collect.stderr)[-3000:]
        return {"rows": [{**row, "ok": False, "error": "no tests collected", "tail": tail}]}
    if workers is None:
        workers = 1 if quick else max(1, min(8, (os.cpu_count() or 1) // 2))
    workers = min(workers, len(ids))
    logs = [out / f"activation_tests_{i}.log" for i in range(workers)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as f:
            procs.append(
                subprocess.Popen(
                    base + ["-v", *ids[i::workers]],
                    cwd=ROOT,
                    env=env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
            )
    complete, rcs = True, []
    for p in procs:
        try:
            rcs.append(p.wait(timeout=max(budget.left(), 1.0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rcs.append(None)
            complete = False
    counts, failed = _count(logs)
    n_failed = counts.get("FAILED", 0) + counts.get("ERROR", 0)
    ok: bool | None = complete and all(rc == 0 for rc in rcs) and counts.get("PASSED", 0) > 0
    if not complete and n_failed == 0:
        ok = None  # cut short by the budget, nothing failed so far
        row["incomplete"] = "budget"
    row.update(
        collected=len(ids),
        workers=workers,
        returncodes=rcs,
        complete=complete,
        passed=counts.get("PASSED", 0),
        failed=n_failed,
        skipped=counts.get("SKIPPED", 0),
        failed_tests=failed[:200],
        logs=[log.name for log in logs],
        tail="" if ok else "\n".join(log.read_text(errors="replace")[-1500:] for log in logs),
        ok=ok,
    )
    return {"rows": [row]}


# ---------------------------------------------------------------- parity with PyTorch


def _torch_models():
    sys.path.insert(0, str(ROOT / "tests"))
    import torch_models  # noqa: PLC0415 - the PyTorch originals live with the parity tests

    return torch_models


def _normwise(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def parity_one(name: str, ctor: str, kwargs: dict[str, Any], *, batch: int, device: str):
    """Errors (normwise, relative) of relujax vs PyTorch on ``device``: logits, loss, grads."""
    import torch
    from flax import nnx

    import relujax.models as rm
    from relujax.interop import load_torch_state_dict

    tm = _torch_models()
    torch.manual_seed(0)
    tmodel = getattr(tm, ctor)(**kwargs)
    gen = torch.Generator().manual_seed(0)
    for m in tmodel.modules():  # random BN statistics, so that loading them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                m.running_mean.normal_(0.0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    tmodel = tmodel.to(device).train()
    jmodel = rm.create_model(name, rngs=nnx.Rngs(1), **kwargs)
    load_torch_state_dict(jmodel, {k: v.detach().cpu() for k, v in tmodel.state_dict().items()})
    jmodel.train()
    x = np.asarray(jax.random.normal(jax.random.key(0), (batch, 32, 32, 3), jnp.float32))
    labels = np.arange(batch) % 2
    xt = torch.tensor(np.ascontiguousarray(np.moveaxis(x, -1, 1)), device=device)
    xt.requires_grad_(True)
    logits_t = tmodel(xt)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels, device=device))
    loss_t.backward()

    graphdef, params, rest = nnx.split(jmodel, nnx.Param, ...)

    def loss_fn(params, x):
        logits = nnx.merge(graphdef, params, rest, copy=True)(x)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(logp[jnp.arange(batch), labels]), logits

    fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
    (loss_j, logits_j), (grads_j, gx_j) = fn(params, jnp.asarray(x))
    errors = {
        "logits": _normwise(logits_j, logits_t.detach().cpu().numpy()),
        "loss": _normwise(loss_j, loss_t.detach().cpu().numpy()),
        "grad_x": _normwise(gx_j, np.moveaxis(xt.grad.cpu().numpy(), 1, -1)),
    }
    tparams = dict(tmodel.named_parameters(remove_duplicate=False))
    ref = nnx.clone(jmodel)
    load_torch_state_dict(
        ref,
        {
            k: (tparams[k].grad if k in tparams else v).detach().cpu()
            for k, v in tmodel.state_dict().items()
        },
    )
    pairs = list(
        zip(jax.tree.leaves(grads_j), jax.tree.leaves(nnx.state(ref, nnx.Param)), strict=True)
    )
    scale = max(float(np.max(np.abs(np.asarray(b)))) for _, b in pairs)
    errors["grad_params"] = max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in pairs
    ) / max(scale, 1e-30)
    return errors


PARITY_FULL = [
    ("netdepth", "NetDepth", {}),
    ("netres", "NetRes", {}),
    ("netresdeep", "NetResDeep", {"n_blocks": 10, "shared_blocks": True}),
    ("netresdeep", "NetResDeep", {"n_blocks": 10, "shared_blocks": False}),
    ("resnet20", "resnet20", {}),
]
PARITY_QUICK = [
    ("netresdeep", "NetResDeep", {"n_chans1": 8, "n_blocks": 2, "shared_blocks": False}),
]


def torch_parity(budget: Budget, *, quick: bool, tol: float = 1e-4) -> dict[str, Any]:
    """relujax vs the PyTorch originals on the same device, in training mode, full float32.

    TF32 is off in both (``torch.backends.*.allow_tf32 = False``, JAX's matmul precision
    ``highest``): the comparison is of the implementations, not of the GPU's fast modes.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() and platform() != "cpu" else "cpu"
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        return _parity_rows(budget, quick=quick, tol=tol, device=device)
    finally:  # the speed sections run both libraries at their defaults
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _parity_rows(budget: Budget, *, quick: bool, tol: float, device: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    batch = 4 if quick else 16
    for name, ctor, kwargs in PARITY_QUICK if quick else PARITY_FULL:
        label = {"check": "torch parity", "model": name, **kwargs, "torch_device": device}
        if not budget.ok():
            rows.append({**label, "ok": None, "skipped": "budget"})
            continue

        def one(name=name, ctor=ctor, kwargs=kwargs, label=label):
            with jax.default_matmul_precision("highest"):
                errors = parity_one(name, ctor, kwargs, batch=batch, device=device)
            worst = max(errors.values())
            rows.append({**label, **errors, "worst": worst, "tol": tol, "ok": worst <= tol})
            print(f"  parity {name} {kwargs}: worst {worst:.2e}", flush=True)

        guarded(rows, label, one)
    return {"rows": rows, "torch_device": device}


# ---------------------------------------------------------------- scanned vs unrolled


def scan_vs_unrolled(budget: Budget, *, quick: bool, tol: float = 1e-4) -> dict[str, Any]:
    """The scanned and unrolled stacks of a model agree: logits and gradients, training mode."""
    from flax import nnx

    from relujax.models import create_model

    cases = [("netresdeep", {"n_blocks": 3, "n_chans1": 8})]
    if not quick:
        cases = [("netresdeep", {"n_blocks": 20}), ("resnet20", {})]
        cases += [("netresdeep", {"n_blocks": 3, "n_chans1": 8, "shared_blocks": True})]
    rows: list[dict[str, Any]] = []
    x = jax.random.normal(jax.random.key(0), (4 if quick else 16, 32, 32, 3), jnp.float32)
    for name, kw in cases:
        label = {"check": "scan vs unrolled", "model": name, **kw}
        if not budget.ok():
            rows.append({**label, "ok": None, "skipped": "budget"})
            continue

        def one(name=name, kw=kw, label=label):
            out = {}
            for scan in (False, True):
                model = create_model(name, rngs=nnx.Rngs(0), scan_blocks=scan, **kw)
                model.train()
                gd, params, rest = nnx.split(model, nnx.Param, ...)

                def loss(params, gd=gd, rest=rest):
                    logits = nnx.merge(gd, params, rest, copy=True)(x)
                    return jnp.mean(jnp.square(logits.astype(jnp.float32))), logits

                (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
                out[scan] = (np.asarray(logits), [np.asarray(g) for g in jax.tree.leaves(grads)])
            (la, ga), (lb, gb) = out[False], out[True]
            # Scanned stacks hold each parameter of all blocks in one leaf: compare the sorted
            # values of all gradients (sorting is 1-Lipschitz in the max norm, so agreeing
            # gradients give a small error; a missing or doubled gradient a large one).
            ga_all = np.sort(np.concatenate([g.ravel() for g in ga]))
            gb_all = np.sort(np.concatenate([g.ravel() for g in gb]))
            errors = {"logits": _normwise(lb, la)}
            same = ga_all.shape == gb_all.shape
            errors["grads_sorted"] = _normwise(gb_all, ga_all) if same else float("inf")
            worst = max(errors.values())
            rows.append({**label, **errors, "worst": worst, "tol": tol, "ok": worst <= tol})
            print(f"  scan vs unrolled {name} {kw}: worst {worst:.2e}", flush=True)

        guarded(rows, label, one)
    return {"rows": rows}


# ---------------------------------------------------------------- a short training run


def short_run(
    budget: Budget, *, quick: bool, out: pathlib.Path, data_dir: str | None
) -> dict[str, Any]:
    """Two epochs of the book's NetDepth on CIFAR-2 (synthetic when absent): the loss falls."""
    from relujax.training import TrainConfig, train

    synthetic = {"n_train": 512, "n_test": 64} if quick else {"n_train": 10000, "n_test": 2000}
    ds, source = load_cifar2(data_dir, synthetic_kw=synthetic, real=not quick)
    config = TrainConfig(
        model="netdepth",
        model_kwargs={"n_chans1": 8} if quick else {},
        dataset="cifar2" if source != "synthetic" else "synthetic",
        epochs=2,
        batch_size=32 if quick else 64,
        optimizer="momentum",
        lr=0.05 if quick else 0.01,
        workdir=str(out / "short_run"),
        log_every=0,
        progress=False,
    )
    row: dict[str, Any] = {"check": "2-epoch run", "model": "netdepth", "data": source}
    try:
        summary = train(config, dataset=ds, log=lambda line: print("  " + line, flush=True))
    except Exception as e:  # noqa: BLE001 - recorded
        return {"rows": [{**row, "ok": False, **error_record(e)}]}
    from relujax.training import read_metrics

    history = read_metrics(out / "short_run")
    losses = [r["train_loss"] for r in history]
    row.update(
        train_loss=losses,
        val_acc=[r["val_acc"] for r in history],
        epoch_s=[r["seconds"] for r in history],
        compile_s=summary.get("compile_seconds"),
        ok=len(losses) == 2 and losses[1] < losses[0],
    )
    return {"rows": [row]}


def export_gpu(budget: Budget, *, quick: bool) -> dict[str, Any]:
    """On a host without a GPU: the app's steps, as built for ``gpu``, lower for CUDA."""
    from benchmarks.accel.common import export_step

    cases = [("netdepth", {}), ("netresdeep", {"n_blocks": 3})]
    if not quick:
        cases += [
            ("netres", {}),
            ("resnet20", {}),
            ("netresdeep", {"n_blocks": 3, "shared_blocks": True}),
        ]
    rows: list[dict[str, Any]] = []
    for name, kw in cases:
        label = {"check": "export cuda", "model": name, **kw}
        if not budget.ok():
            rows.append({**label, "ok": None, "skipped": "budget"})
            continue

        def one(name=name, kw=kw, label=label):
            r = export_step(name, kw, platform_name="cuda")
            rows.append({**label, **r, "ok": not r["cpu_only_custom_calls"]})

        guarded(rows, label, one)
    return {"rows": rows}
