"""PyTorch interop: load a PyTorch ``state_dict`` into the matching relujax model."""

from relujax._src.extras import require as _require

_require("relujax.interop", "nn", "flax")

from relujax._src.interop import load_torch_state_dict as load_torch_state_dict

__all__ = ["load_torch_state_dict"]
