"""Build hook: copy the repository-root data (envs/*.toml, agents/default/*) into the wheel.

The files live once, at the top level (the layout DESIGN.md asks for); a built wheel carries
copies under lrctl/_data/ so that `LRController(opt, total_steps=N)` finds the shipped controller
and `load_suite('train')` finds the suites after a plain `pip install`. lrctl.resources looks
there first and falls back to the source tree (editable installs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = [
    "envs/train.toml",
    "envs/eval.toml",
    "agents/default/controller.safetensors",
    "agents/default/config.json",
]


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # editable installs read the files in place
            return
        for rel in SHIPPED:
            src = ROOT / rel
            if src.is_file():
                dst = Path(self.build_lib) / "lrctl" / "_data" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildWithData})
