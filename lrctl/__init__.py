"""lrctl: learned learning-rate control for PyTorch.

`from lrctl import LRController` needs torch and numpy only. When gymnasium is installed,
importing lrctl also registers the environment `lrctl/LRControl-v1` (the env module itself is
imported only when the env is made). The id's version follows the observation: v1 observes
features v2 (`lrctl.features.FEATURE_VERSION`) by default, and features v3 or v4 when made with
`feature_version=3` or `4`; a policy trained on one version's observations is not valid on
another's. `lrctl/LRControl-v0`, the features-v1 env, stays registered only to say so when made.
"""

from __future__ import annotations

__version__ = "0.1.0"
ENV_ID = "lrctl/LRControl-v1"
"""The environment's Gymnasium id; its version changes whenever the observation does."""
RETIRED_ENV_IDS = {
    "lrctl/LRControl-v0": "features v1 (gradient norms read on every step of a block)",
}
"""Earlier ids and the observation each had; making one raises an error that names ENV_ID."""

try:  # the env is optional for users who only run a controller (the runtime needs torch only)
    import gymnasium as _gym
except ImportError:  # pragma: no cover - exercised by the standalone-runtime test
    _gym = None


def _retired_env_maker(env_id: str):
    def make(**kwargs: object) -> None:
        raise _gym.error.DeprecatedEnv(
            f"{env_id} was the environment with {RETIRED_ENV_IDS[env_id]}; its observation "
            f"has changed since (features v2), so it is no longer made: use {ENV_ID}"
        )

    return make


if _gym is not None:
    if ENV_ID not in _gym.registry:
        _gym.register(id=ENV_ID, entry_point="lrctl.env:LRControlEnv")
    for _retired in RETIRED_ENV_IDS:
        if _retired not in _gym.registry:
            _gym.register(id=_retired, entry_point=_retired_env_maker(_retired))


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
