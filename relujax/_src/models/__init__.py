"""The networks of :mod:`relujax.models` (book ch. 8 nets, ResBlock stacks, ResNets)."""
