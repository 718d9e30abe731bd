"""Shared pieces of the accelerator check: budgets, the app's training step, data, backends.

The training steps timed and checked here are built with the library's own builder
(``relujax.training.prepare_run``), so whatever the speed policy picks for the backend (scanned
or unrolled stacks, convolution implementation, compile options) is what runs, exactly as in
``python -m train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Budget:
    """A wall-clock allowance in seconds, started on construction."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def ok(self, need: float = 0.0) -> bool:
        """True while more than ``need`` seconds are left."""
        return self.left() > need


def error_record(e: BaseException) -> dict[str, str]:
    """What a failed check writes into the JSON: the exception and the end of its traceback."""
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return {"error": f"{type(e).__name__}: {e}"[:2000], "traceback": "".join(tb)[-4000:]}


def _no_progress(rows: list[dict[str, Any]]) -> None:
    del rows


# Called with a section's rows after each of its checks (accel_check saves them: a run cut
# short by the loan's limit keeps the checks it finished).
on_progress: Callable[[list[dict[str, Any]]], None] = _no_progress


def guarded(rows: list[dict[str, Any]], label: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Runs ``fn()``; on an exception appends ``label`` + the error to ``rows`` and returns None.

    One failing check must never abort the others (a loan is too short to rerun).
    """
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - recorded, and the next check runs
        rows.append({**label, "ok": False, **error_record(e)})
        print(f"  FAILED {label}: {type(e).__name__}: {e}"[:400], flush=True)
        return None
    finally:
        on_progress(rows)


def platform() -> str:
    """JAX's default platform name: ``"cpu"``, ``"cuda"``, ``"rocm"`` or ``"tpu"``."""
    return jax.default_backend()


def emulate_backend(name: str) -> contextlib.AbstractContextManager[None]:
    """Builds models and steps with the speed policy of backend ``name`` (``"gpu"``, ``"tpu"``).

    For checking from a CPU host what the library builds for a GPU/TPU (then lowered with
    ``jax.export(..., platforms=("cuda",))``). Nothing runs on the emulated backend; never use
    it around a computation that executes.
    """
    from relujax import policy

    return policy.override(name)


def data_dir_candidates(data_dir: str | None) -> list[str]:
    """Where CIFAR-2 is looked for: --data-dir, then $RELUJAX_DATA (as the library does)."""
    cands = [data_dir, os.environ.get("RELUJAX_DATA")]
    return [c for c in cands if c]


def load_cifar2(
    data_dir: str | None, *, synthetic_kw: dict[str, int], real: bool = True
) -> tuple[Any, str]:
    """CIFAR-2 from the first folder that holds it (never downloaded), else a synthetic set.

    ``real=False`` (``--quick``) always gives the synthetic set. Returns ``(dataset, source)``;
    ``source`` says which (a path, or ``"synthetic"``).
    """
    from relujax import data as rdata

    for folder in data_dir_candidates(data_dir) if real else []:
        if not os.path.isdir(folder):
            continue
        try:
            ds = rdata.load_dataset("cifar2", folder, download=False, progress=False)
        except Exception:  # noqa: BLE001 - not here (or unreadable): try the next folder
            continue
        return ds, folder
    return rdata.load_dataset("synthetic", num_classes=2, **synthetic_kw), "synthetic"


@dataclasses.dataclass
class AppStep:
    """A compiled training step of the app and the arguments it is called with."""

    run: Callable[[int], jax.Array]  # run(k): k consecutive steps, returns the last loss sum
    compile_s: float
    memory: dict[str, int] | None
    parameters: int


def _synthetic_images(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(n) % num_classes).astype(np.int32)
    return x, y


def app_step_parts(
    model: str,
    model_kwargs: dict[str, Any] | None = None,
    *,
    batch: int,
    num_classes: int,
    dtype: str = "float32",
    augment: bool = False,
    steps: int = 2,
    seed: int = 0,
) -> tuple[Any, tuple[Any, ...]]:
    """The app's jitted train step for ``model`` and arguments for its first call.

    Built by ``relujax.training.prepare_run`` (as ``relujax.training.train`` builds it), on
    ``steps`` batches of random uint8 images in order, plain SGD at 1e-3 as the PyTorch side
    of the speed table. Returns ``(jitted, args)``.
    """
    from relujax._src.data.dataset import make_dataset
    from relujax.training import TrainConfig, prepare_run

    config = TrainConfig(
        model=model,
        model_kwargs=dict(model_kwargs or {}),
        batch_size=batch,
        optimizer="sgd",
        lr=1e-3,
        dtype=dtype,
        augment=augment,
        shuffle=False,
        seed=seed,
        progress=False,
    )
    xs, ys = _synthetic_images(batch * steps, num_classes, seed)
    ds = make_dataset(
        "random", xs, ys, xs[:batch], ys[:batch], source="random", num_classes=num_classes
    )
    app = prepare_run(config, ds)
    args = (
        *app.state.tree().values(),
        *app.train_args(*app.epoch_table(0)),
        app.number(0),
        app.number(0),
    )
    return app.steps.train, args


def app_step(model: str, model_kwargs: dict[str, Any] | None = None, **parts: Any) -> AppStep:
    """:func:`app_step_parts`, compiled ahead of time (compile time and XLA memory analysis)."""
    from benchmarks import _harness as h

    jitted, args = app_step_parts(model, model_kwargs, **parts)
    compiled, compile_s = h.compile_jitted(jitted, *args)
    memory = h.memory_analysis(compiled)
    parameters = int(sum(np.prod(p.shape) for p in jax.tree.leaves(args[0])))
    state = {"s": args[:4]}
    data, number = args[4:8], args[8].sharding  # step numbers live where the step's do
    steps = [jax.device_put(np.int32(i), number) for i in range(args[6].shape[0])]
    epoch = args[9]

    def run(k: int) -> jax.Array:
        for i in range(k):
            state["s"] = compiled(*state["s"], *data, steps[i % len(steps)], epoch)
        return state["s"][3]["loss_sum"]

    return AppStep(run, compile_s, memory, parameters)


def peak_mib(memory: dict[str, int] | None) -> float | None:
    """Arguments + outputs + temporaries of XLA's memory analysis, in MiB."""
    if not memory:
        return None
    return (memory["temp"] + memory["argument"] + memory["output"]) / 2**20


def cpu_only_custom_calls(mlir_text: str) -> list[str]:
    """Custom-call targets in a lowered module that only exist on the CPU (relujax's kernels)."""
    import re

    targets = set(re.findall(r"custom_call\s*@([\w.$-]+)", mlir_text))
    targets |= set(re.findall(r'call_target_name\s*=\s*"([^"]+)"', mlir_text))
    return sorted(t for t in targets if "relujax" in t.lower() or t.lower().startswith("xla_cpu"))


def export_step(
    model: str,
    model_kwargs: dict[str, Any] | None = None,
    *,
    platform_name: str = "cuda",
    batch: int = 4,
    num_classes: int = 2,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Lowers the app's training step, as the policy builds it for ``platform_name``, for it.

    Uses ``jax.export`` (no device of that kind needed). Returns the number of characters of
    the StableHLO module and the CPU-only custom calls found in it (must be none).
    """
    # jax.default_backend() says "gpu" for CUDA and ROCm devices.
    backend = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}[platform_name]
    with emulate_backend(backend):
        jitted, args = app_step_parts(
            model, model_kwargs, batch=batch, num_classes=num_classes, dtype=dtype, steps=1
        )
        specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
        exported = jax.export.export(jitted, platforms=(platform_name,))(*specs)
    text = exported.mlir_module()
    return {
        "platforms": list(exported.platforms),
        "mlir_chars": len(text),
        "cpu_only_custom_calls": cpu_only_custom_calls(text),
    }
