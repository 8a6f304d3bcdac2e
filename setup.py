"""Build hooks: ship the repository-root data (the default controller, the task suites) in the
sdist and the wheel, and fail the build when any of it is missing.

The files live once, at the top level (the repository's layout): `agents/default/` (the
shipped controller, the config it was trained with, its model card) and `envs/*.toml` (the task
suites). MANIFEST.in puts them in the sdist, so a wheel built from the sdist (what
`python -m build` does) sees the same tree as one built from a checkout; `build_py` copies them
into the wheel under `lrctl/_data/`, where `lrctl.resources` finds them in an installed wheel.
Editable installs read them in place. Every route checks that the files are there: a package
that cannot find its default controller must not build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel
from setuptools.command.sdist import sdist
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent

REQUIRED = (
    "agents/default/controller.safetensors",
    "agents/default/config.json",
    "envs/train.toml",
    "envs/eval.toml",
)
"""What the runtime and the CLI read: `LRController`'s default controller, the config it was
trained with, and the suites `load_suite` knows by name."""

PATTERNS = ("agents/default/*", "envs/*.toml")
"""Everything shipped: the required files, the rest of the controller's folder (its model card
and plot) and every suite."""


def shipped_files(root: Path = ROOT) -> list[str]:
    """The shipped files under `root` (POSIX paths relative to it); raises if one is missing."""
    missing = [rel for rel in REQUIRED if not (root / rel).is_file()]
    if missing:
        raise FileError(
            f"cannot build lrctl: {', '.join(missing)} missing under {root}. These files ship "
            "in the wheel (the default controller, the task suites); restore them, or, when "
            "building from an sdist, make sure MANIFEST.in includes them."
        )
    found = {p.relative_to(root).as_posix() for pat in PATTERNS for p in root.glob(pat)}
    return sorted(rel for rel in found if (root / rel).is_file())


class BuildPyWithData(build_py):
    """build_py that also copies the shipped files into `lrctl/_data/` of the wheel."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # read in place; `EditableWheelWithData` checks them
            return
        files = shipped_files()
        data = Path(self.build_lib) / "lrctl" / "_data"
        shutil.rmtree(data, ignore_errors=True)  # no stale copies from an earlier build
        for rel in files:
            dst = data / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst)


class EditableWheelWithData(editable_wheel):
    """An editable install reads the shipped files in place: they must be there. (Checked
    here: setuptools turns an error in a custom build_py of an editable build into a warning.)"""

    def run(self) -> None:
        shipped_files()
        super().run()


class SdistWithData(sdist):
    """sdist that refuses to leave a shipped file out (MANIFEST.in and PATTERNS must agree)."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        listed = {Path(f).as_posix() for f in files}
        left_out = [rel for rel in shipped_files() if rel not in listed]
        if left_out:
            raise FileError(
                f"cannot build the lrctl sdist: MANIFEST.in leaves out {', '.join(left_out)}; "
                "a wheel built from it would lack them"
            )
        super().make_release_tree(base_dir, files)


setup(
    cmdclass={
        "build_py": BuildPyWithData,
        "editable_wheel": EditableWheelWithData,
        "sdist": SdistWithData,
    }
)
