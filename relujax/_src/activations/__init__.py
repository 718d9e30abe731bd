"""Pure functional activations with custom_jvp derivative rules (implementation)."""

from relujax._src.activations.exponential import celu as celu
from relujax._src.activations.exponential import elu as elu
from relujax._src.activations.exponential import selu as selu
from relujax._src.activations.memory import residual_bytes as residual_bytes
from relujax._src.activations.piecewise import leaky_relu as leaky_relu
from relujax._src.activations.piecewise import prelu as prelu
from relujax._src.activations.piecewise import relu as relu
from relujax._src.activations.piecewise import relu6 as relu6
from relujax._src.activations.piecewise import rrelu as rrelu
from relujax._src.activations.registry import ACTIVATIONS as ACTIVATIONS
from relujax._src.activations.registry import ActivationSpec as ActivationSpec
from relujax._src.activations.smooth import gelu as gelu
from relujax._src.activations.smooth import silu as silu
from relujax._src.activations.smooth import softplus as softplus
