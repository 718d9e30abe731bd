"""Entry point of `python -m train` (a checkout's shortcut for `python -m relujax.train`)."""

from relujax.train import run

if __name__ == "__main__":
    run()
