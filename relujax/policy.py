"""The speed policy: which implementation runs on each backend.

The choices and the reasons for them are in ``relujax._src.policy``'s docstring (the one place
they are written; the top of the API page docs/api/policy.md); this module re-exports its
functions.

Example:
    >>> import relujax.policy
    >>> relujax.policy.describe("gpu")["conv"]
    'lax'
"""

from relujax._src.policy import Policy as Policy
from relujax._src.policy import compiler_options as compiler_options
from relujax._src.policy import current as current
from relujax._src.policy import default_backend as default_backend
from relujax._src.policy import describe as describe
from relujax._src.policy import fast_conv as fast_conv
from relujax._src.policy import fast_pool as fast_pool
from relujax._src.policy import jit as jit
from relujax._src.policy import native_convs as native_convs
from relujax._src.policy import override as override
from relujax._src.policy import scan_blocks as scan_blocks
from relujax._src.policy import sync_each_step as sync_each_step

__all__ = [
    "Policy",
    "compiler_options",
    "current",
    "default_backend",
    "describe",
    "fast_conv",
    "fast_pool",
    "jit",
    "native_convs",
    "override",
    "scan_blocks",
    "sync_each_step",
]
