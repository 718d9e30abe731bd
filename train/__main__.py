"""Entry point of `python -m train` (a checkout's shortcut for `python -m relujax.train`)."""

import sys

from relujax.train import main

if __name__ == "__main__":
    sys.exit(main())
