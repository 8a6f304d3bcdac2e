"""Where files that live at the repository root (envs/, agents/) are found at run time.

In a source checkout or editable install they are read in place; a built wheel carries copies
under lrctl/_data/ (setup.py copies them at build time), so there is one source of truth.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_path(relative: str) -> Path:
    """Path of a shipped file, e.g. data_path('agents/default/controller.safetensors')."""
    bundled = _PACKAGE / "_data" / relative
    if bundled.exists():
        return bundled
    return _PACKAGE.parent / relative


DEFAULT_CONTROLLER = "agents/default/controller.safetensors"
