"""Where files that live at the repository root (envs/, agents/) are found at run time.

In a source checkout or an editable install they are read in place, at the top level. A built
wheel carries copies under lrctl/_data/ (setup.py copies them at build time and fails the build
when one is missing); when that folder exists, this is an installed wheel and every shipped
file is looked up there, so an error names the installed path, never a guess beside it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_BUNDLED = _PACKAGE / "_data"


def data_path(relative: str) -> Path:
    """Path of a shipped file, e.g. data_path('agents/default/controller.safetensors')."""
    root = _BUNDLED if _BUNDLED.is_dir() else _PACKAGE.parent
    return root / relative


DEFAULT_CONTROLLER = "agents/default/controller.safetensors"
