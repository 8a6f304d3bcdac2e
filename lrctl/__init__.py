"""lrctl: learned learning-rate control for PyTorch.

`from lrctl import LRController` needs torch and numpy only. When gymnasium is installed,
importing lrctl also registers the environment `lrctl/LRControl-v0` (the env module itself is
imported only when the env is made).
"""

from __future__ import annotations

__version__ = "0.1.0"
ENV_ID = "lrctl/LRControl-v0"

try:  # the env is optional for users who only run a controller (DESIGN rule 2)
    import gymnasium as _gym
except ImportError:  # pragma: no cover - exercised by the standalone-runtime test
    _gym = None

if _gym is not None and ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="lrctl.env:LRControlEnv")


def __getattr__(name: str):
    # Lazy so that `import lrctl` stays cheap and `lrctl.controller` is imported only when used.
    if name == "LRController":
        from lrctl.controller import LRController

        return LRController
    if name == "find_lr":
        from lrctl.range_test import find_lr

        return find_lr
    if name == "layer_param_groups":
        from lrctl.param_groups import layer_param_groups

        return layer_param_groups
    raise AttributeError(f"module 'lrctl' has no attribute {name!r}")


__all__ = ["ENV_ID", "LRController", "__version__", "find_lr", "layer_param_groups"]
