"""A wheel built the standard way (`python -m build`: sdist, then the wheel from the sdist) works
after `pip install`, from outside the source tree, with the shipped controller and suites; and
a tree that lacks a shipped file fails to build by every route (wheel, sdist, editable).

Route: the wheel is installed with `pip install --no-deps` into a fresh virtualenv whose only
other content is a `.pth` line naming this interpreter's site-packages, so the dependencies
(torch, gymnasium, SB3, ...) come from the environment running the tests while lrctl itself
comes only from the wheel. A `.pth` line only puts a folder on sys.path; the `.pth` files inside
it are not run, so the editable install's import hook (or path entry) for the source tree never
loads, and the test checks that lrctl is imported from the fresh venv. Why not install the
dependencies from the registry: that took 1 min 54 s and 1.5 GB on this project's 2-core
machine (torch, scipy, pandas, matplotlib, ...), against about 2 s, and the whole file runs in
about 75 s; instead the test checks that every requirement the wheel declares is satisfied by
what it sees.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from lrctl.resources import DEFAULT_CONTROLLER, data_path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    p.relative_to(REPO).as_posix()
    for pattern in ("agents/default/*", "envs/*.toml")
    for p in REPO.glob(pattern)
    if p.is_file()
)


def _env() -> dict[str, str]:
    """The test's environment without anything that could put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _build(source: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "build", *flags, "--outdir", out, source], cwd=out.parent)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    done = _build(REPO, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("lrctl-*.tar.gz")
    (wheel,) = out.glob("lrctl-*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_source_tree_reads_shipped_files_in_place() -> None:
    """The checkout (editable install) has no lrctl/_data/: files are read at the top level."""
    import lrctl

    if not Path(lrctl.__file__).is_relative_to(REPO):
        pytest.skip("lrctl is installed from a wheel here, not run from this checkout")
    assert not (REPO / "lrctl" / "_data").exists()
    assert data_path(DEFAULT_CONTROLLER) == REPO / "agents/default/controller.safetensors"
    assert {"agents/default/controller.safetensors", "envs/train.toml"} <= set(SHIPPED)


@pytest.mark.slow
def test_sdist_and_wheel_carry_the_shipped_files(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(f"{top}/") for n in tar.getnames()}
    assert set(SHIPPED) <= in_sdist
    assert {"setup.py", "MANIFEST.in"} <= in_sdist
    with zipfile.ZipFile(dist["wheel"]) as whl:
        bundled = {
            n.removeprefix("lrctl/_data/"): whl.read(n)
            for n in whl.namelist()
            if n.startswith("lrctl/_data/")
        }
        names = whl.namelist()
    assert sorted(bundled) == SHIPPED
    assert all(bundled[rel] == (REPO / rel).read_bytes() for rel in SHIPPED)
    assert not any(n.startswith(("agents/", "envs/")) for n in names)  # nothing at the top level


@pytest.mark.slow
def test_missing_shipped_file_fails_the_build(dist: dict[str, Path], tmp_path: Path) -> None:
    with tarfile.open(dist["sdist"]) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(tmp_path, filter="data")
        else:  # pragma: no cover
            tar.extractall(tmp_path)
    (source,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (source / "agents/default/config.json").unlink()
    for route in ("--wheel", "--sdist"):
        out = tmp_path / f"out{route}"
        out.mkdir()
        done = _build(source, out, route)
        assert done.returncode != 0, route
        assert "agents/default/config.json missing" in done.stdout + done.stderr, route
        assert not list(out.iterdir()), route
    # The editable route (pip install -e), into a throwaway venv.
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path).returncode == 0
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"]
    done = _run([*pip, "--no-deps", "-e", source], cwd=tmp_path)
    assert done.returncode != 0
    assert "agents/default/config.json missing" in done.stdout + done.stderr


CONTROLLER_SCRIPT = textwrap.dedent(
    """
    import importlib.metadata as md, json, math, sys
    from pathlib import Path

    import torch
    from packaging.requirements import Requirement

    import lrctl
    from lrctl import LRController
    from lrctl.resources import DEFAULT_CONTROLLER, data_path
    from lrctl.tasks import load_suite

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = LRController(opt, total_steps=40)
    losses, lrs = [], []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss)
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])

    unmet = []
    for text in md.requires("lrctl"):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{text} (have {have})")
    print(json.dumps({
        "lrctl": lrctl.__file__,
        "dist": str(md.distribution("lrctl").locate_file("")),
        "controller": str(data_path(DEFAULT_CONTROLLER)),
        "suites": [load_suite(n).name for n in ("train", "eval")],
        "finders": [type(f).__name__ for f in sys.meta_path],
        "editable": [m for m in sys.modules if "editable" in m],
        "losses": losses,
        "lrs": lrs,
        "unmet": unmet,
    }))
    """
)


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_source_tree(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    done = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    python, lrctl_cmd = venv / "bin" / "python", venv / "bin" / "lrctl"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    done = _run([*pip, dist["wheel"]], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).stdout.strip()
    )
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_lrctl_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")

    work = tmp_path / "elsewhere"  # the cwd: neither the repository nor the venv
    work.mkdir()
    done = _run([python, "-c", CONTROLLER_SCRIPT], cwd=work)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(got["lrctl"]).is_relative_to(site)  # the wheel's lrctl, not the checkout's
    assert Path(got["dist"]) == site
    assert Path(got["controller"]) == site / "lrctl/_data/agents/default/controller.safetensors"
    assert got["suites"] == ["train", "eval"]
    assert not got["editable"] and "_EditableFinder" not in got["finders"]
    assert not got["unmet"], got["unmet"]
    lrs, losses = got["lrs"], got["losses"]
    # lrs[t]: the LR after step t + 1 (an anchored controller ends at cosine's 0).
    assert all(math.isfinite(lr) and 0.0 <= lr < 1.0 for lr in lrs)
    assert len(set(lrs)) > 1 and lrs[-1] != 0.05  # the LR moved
    cosine = [0.05 * 0.5 * (1 + math.cos(math.pi * (t + 1) / 40)) for t in range(40)]
    assert any(
        abs(lr - c) > 1e-6 * c for lr, c in zip(lrs, cosine, strict=True)
    )  # not plain cosine
    assert losses[-1] < 0.5 * losses[0]

    done = _run([lrctl_cmd, "demo", "--seeds", "1", "--steps", "30"], cwd=work, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    demo = work / "results" / "demo"
    assert (demo / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| controller + SGD-momentum |" in (demo / "summary.md").read_text()
    runs = pd.read_csv(demo / "runs.csv")
    assert set(runs["method"]) == {
        "controller_momentum", "momentum_cosine", "controller_adam", "adam_cosine", "adam_default",
    }  # fmt: skip
    assert set(runs["steps"]) == {30} and set(runs["seed"]) == {1000}
    assert runs["final_val_loss"].between(0.0, 10.0).all() and not runs["diverged"].any()
    assert "wrote results/demo/summary.md" in done.stdout
