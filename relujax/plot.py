"""Draws every activation and its derivative: `python -m relujax.plot [--out PATH]`.

Writes a small PNG (default `docs/activations.png`): one panel per function of
`relujax.ACTIVATIONS` on x in [-3, 3], value solid and derivative (as relujax computes it,
kink convention included) dashed (relu6 on [-3, 8] to show its cap), plus a last panel with
GELU and ReLU side by side.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from relujax._src.activations.registry import ACTIVATIONS
from relujax._src.extras import require as _require

__all__ = ["plot_activations", "main"]


def _format(value: object) -> str:
    return str(value) if isinstance(value, bool) else f"{value:.3g}"


def _curves(name: str, x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    spec = ACTIVATIONS[name]

    def f(x):
        return spec.fn(x, **spec.default_kwargs)

    y, dy = jax.jit(lambda x: (f(x), jax.vmap(jax.grad(f))(x)))(x)
    return np.asarray(y), np.asarray(dy)


def plot_activations(
    out: str | pathlib.Path = "docs/activations.png", *, dpi: int = 72
) -> pathlib.Path:
    """Draws each activation and its derivative on [-3, 3] into the PNG file `out`.

    Args:
      out: path of the PNG to write (parent folders are created).
      dpi: resolution; the default keeps the file small (about 100 kB).

    Returns:
      The path written, as a `pathlib.Path`.

    Example:
      >>> import tempfile, pathlib, relujax.plot
      >>> path = relujax.plot.plot_activations(pathlib.Path(tempfile.mkdtemp()) / "a.png")
      >>> path.suffix, path.stat().st_size > 0
      ('.png', True)
    """
    _require("relujax.plot", "plot", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = jnp.linspace(-3.0, 3.0, 601, dtype=jnp.float32)
    names = list(ACTIVATIONS)
    cols = 4
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), sharex=False)
    axes = axes.ravel()
    for ax, name in zip(axes, names, strict=False):
        # relu6's second kink is at 6: its panel extends to x = 8 to show it.
        xs = jnp.linspace(-3.0, 8.0, 1101, dtype=jnp.float32) if name == "relu6" else x
        y, dy = _curves(name, xs)
        ax.plot(xs, y, color="C0", lw=1.6, label="f(x)")
        ax.plot(xs, dy, color="C3", lw=1.2, ls="--", label="f'(x)")
        kwargs = ", ".join(f"{k}={_format(v)}" for k, v in ACTIVATIONS[name].default_kwargs.items())
        title = f"{name}({kwargs})" if kwargs else name
        ax.set_title(title + (", x in [-3, 8]" if name == "relu6" else ""), fontsize=9)
    ax = axes[len(names)]
    for name, color in (("relu", "C0"), ("gelu", "C2")):
        y, dy = _curves(name, x)
        ax.plot(x, y, color=color, lw=1.6, label=name)
        ax.plot(x, dy, color=color, lw=1.2, ls="--", label=f"{name}'")
    ax.set_title("GELU vs ReLU", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    for ax in axes[len(names) + 1 :]:
        ax.axis("off")
    for ax in axes[: len(names) + 1]:
        ax.axhline(0, color="0.7", lw=0.6)
        ax.axvline(0, color="0.7", lw=0.6)
        ax.set_ylim(-2.0, 3.2 if ax is not axes[names.index("relu6")] else 6.5)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("relujax activations (solid) and their derivatives (dashed), x in [-3, 3]")
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: `python -m relujax.plot [--out PATH] [--dpi N]`."""
    parser = argparse.ArgumentParser(prog="python -m relujax.plot", description=__doc__)
    parser.add_argument("--out", default="docs/activations.png", help="PNG file to write")
    parser.add_argument("--dpi", type=int, default=72, help="resolution (default 72)")
    args = parser.parse_args(argv)
    path = plot_activations(args.out, dpi=args.dpi)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
