"""The training application: `relujax-train --help` (or `python -m relujax.train --help`).

From a checkout, `python -m train` runs the same command. Presets: `relujax-train --list-presets`.
"""

import sys

from relujax._src.extras import require as _require

_require("relujax.train", "train", "flax", "optax", "orbax.checkpoint", "matplotlib", "rich")

from relujax._src import allocator
from relujax._src.app.cli import build_parser as build_parser
from relujax._src.app.cli import main as main
from relujax._src.app.presets import PRESETS as PRESETS
from relujax._src.app.presets import resolve as resolve

__all__ = ["PRESETS", "build_parser", "main", "resolve", "run"]


def run() -> None:
    """The command-line entry: relaunch under a page-keeping allocator, then :func:`main`.

    See `relujax._src.allocator` (`RELUJAX_ALLOCATOR=system` opts out).
    """
    allocator.relaunch()
    sys.exit(main())


if __name__ == "__main__":
    run()
