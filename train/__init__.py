"""The training application: `python -m train --help`. Presets live in `train.presets`."""
