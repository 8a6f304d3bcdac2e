"""Task suites: TOML files listing families and the ranges each samples from.

Three suites, three roles (envs/README.md): `train` is what the controller meta-trains on,
`val` is where every choice about it is made, `eval` is read for the final report only. They
share no family. `train_v1` is the train suite's first revision, kept for comparisons.

Format (version 1)::

    version = 1
    revision = 2                 # optional: the suite's own revision (its content), default 1
    name = "train"

    [[family]]
    name = "digits_mlp"          # a family from lrctl.tasks.FAMILIES
    weight = 1.0                 # relative sampling weight (> 0)
    optimizers = ["sgd", "adam"] # subset of lrctl.optimizers.SAMPLED_OPTIMIZERS
    lr_range = [0.1, 10.0]       # base LR as multiples of the reference LR (log-uniform)
    steps = [200, 800]           # horizon range (log-uniform)
    batch_sizes = [32, 64, 128]
    widths = [32, 64]            # optional: override the family's sizes
    depths = [1, 2]              # optional
    reference_lr = { adam = 3e-3 }  # optional: override reference LRs

A malformed file raises `SuiteError` (an `lrctl.errors.LrctlError`) naming the file, the field
and what is allowed; `Suite.family` raises `UnknownNameError` listing the suite's families.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from lrctl.errors import LrctlError, UnknownNameError
from lrctl.optimizer_names import SAMPLED_OPTIMIZERS
from lrctl.resources import data_path
from lrctl.tasks.base import FamilyConfig, RunSpec, TaskFamily
from lrctl.tasks.families import FAMILIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITE_FORMAT_VERSION = 1
SUITES_DIR = data_path("envs")
"""Where the suite files live (the source tree's envs/, or the wheel's copy)."""
SUITE_NAMES = ("train", "val", "eval", "train_v1")
"""The shipped suites, by the name `load_suite` takes."""
TOP_LEVEL_FIELDS = ("version", "revision", "name", "description", "family")


class SuiteError(LrctlError, ValueError):
    """A suite file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Suite:
    """A weighted set of task families, sampled with a numpy Generator."""

    name: str
    path: Path
    families: tuple[TaskFamily, ...]
    revision: int = 1
    """The suite's own revision: bumped when its families or ranges change."""

    @property
    def family_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.families)

    def family(self, name: str) -> TaskFamily:
        for f in self.families:
            if f.name == name:
                return f
        raise UnknownNameError(
            f"family {name!r} is not in suite {self.name!r} ({self.path}); "
            f"it has: {', '.join(self.family_names)}"
        )

    def sample(self, rng: np.random.Generator) -> tuple[TaskFamily, RunSpec]:
        """Draw a family by weight, then a run spec from it."""
        weights = np.array([f.config.weight for f in self.families], dtype=np.float64)
        family = self.families[int(rng.choice(len(self.families), p=weights / weights.sum()))]
        return family, family.sample(rng)


def resolve_suite_path(path_or_name: str | Path) -> Path:
    """A suite path as given, or a bare name ('train', 'val', 'eval', ...) looked up in envs/."""
    p = Path(path_or_name)
    if p.suffix != ".toml" and not p.exists():
        p = SUITES_DIR / f"{p}.toml"
    return p


def _err(path: Path, where: str, problem: str) -> SuiteError:
    return SuiteError(f"{path}: {where}: {problem}")


def _positive_number_list(path: Path, where: str, value: object, length: int | None) -> list:
    if not isinstance(value, list) or not value:
        raise _err(path, where, f"expected a non-empty list of positive numbers, got {value!r}")
    if length is not None and len(value) != length:
        raise _err(path, where, f"expected exactly {length} numbers [low, high], got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise _err(path, where, f"expected positive numbers, got {v!r}")
    if length == 2 and value[0] > value[1]:
        raise _err(path, where, f"low must not exceed high, got {value!r}")
    return value


def _parse_family(path: Path, i: int, table: object) -> TaskFamily:
    where = f"family[{i}]"
    if not isinstance(table, dict):
        raise _err(path, where, "each [[family]] entry must be a table")
    allowed = {f.name for f in fields(FamilyConfig)}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _err(
            path,
            f"{where}.{unknown[0]}",
            f"unknown field; allowed fields: {', '.join(sorted(allowed))}",
        )
    name = table.get("name")
    if name not in FAMILIES:
        raise _err(
            path, f"{where}.name", f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}"
        )
    kw: dict = {"name": name}
    where = f"family[{i}] ({name})"
    if "weight" in table:
        kw["weight"] = float(
            _positive_number_list(path, f"{where}.weight", [table["weight"]], 1)[0]
        )
    if "optimizers" in table:
        opts = table["optimizers"]
        if not isinstance(opts, list) or not opts or any(o not in SAMPLED_OPTIMIZERS for o in opts):
            raise _err(
                path, f"{where}.optimizers",
                f"expected a non-empty list drawn from {list(SAMPLED_OPTIMIZERS)}, got {opts!r}",
            )  # fmt: skip
        kw["optimizers"] = tuple(opts)
    if "lr_range" in table:
        kw["lr_range"] = tuple(
            map(float, _positive_number_list(path, f"{where}.lr_range", table["lr_range"], 2))
        )
    if "steps" in table:
        steps = _positive_number_list(path, f"{where}.steps", table["steps"], 2)
        if any(not isinstance(s, int) for s in steps):
            raise _err(path, f"{where}.steps", f"expected integers [low, high], got {steps!r}")
        kw["steps"] = tuple(steps)
    sizes = FAMILIES[name]().arch_space()
    for key in ("batch_sizes", "widths", "depths"):
        if key in ("widths", "depths") and key in table and key[:-1] not in sizes:
            has = ", ".join(f"{k}s" for k in sizes) or "none"
            raise _err(
                path, f"{where}.{key}",
                f"family {name!r} has no {key[:-1]} to vary; its size fields: {has}",
            )  # fmt: skip
        if key in table:
            vals = _positive_number_list(path, f"{where}.{key}", table[key], None)
            if any(not isinstance(v, int) for v in vals):
                raise _err(path, f"{where}.{key}", f"expected positive integers, got {vals!r}")
            kw[key] = tuple(vals)
    if "reference_lr" in table:
        ref = table["reference_lr"]
        if not isinstance(ref, dict) or any(k not in SAMPLED_OPTIMIZERS for k in ref):
            raise _err(
                path, f"{where}.reference_lr",
                f"expected a table keyed by optimizer names {list(SAMPLED_OPTIMIZERS)}, got {ref!r}",
            )  # fmt: skip
        _positive_number_list(path, f"{where}.reference_lr", list(ref.values()), None)
        kw["reference_lr"] = {k: float(v) for k, v in ref.items()}
    return FAMILIES[name](FamilyConfig(**kw))


def load_suite(path_or_name: str | Path) -> Suite:
    """Read and validate a suite file (a path, or a name in `SUITE_NAMES` for envs/<name>.toml)."""
    path = resolve_suite_path(path_or_name)
    if not path.is_file():
        raise SuiteError(
            f"{path}: suite file not found; pass a path to a .toml suite or one of "
            f"{', '.join(repr(n) for n in SUITE_NAMES)} (looked in {SUITES_DIR})"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(TOP_LEVEL_FIELDS))
    if unknown:
        raise _err(
            path, unknown[0], f"unknown top-level field; allowed: {', '.join(TOP_LEVEL_FIELDS)}"
        )
    if data.get("version") != SUITE_FORMAT_VERSION:
        raise _err(
            path,
            "version",
            f"expected version = {SUITE_FORMAT_VERSION}, got {data.get('version')!r}",
        )
    revision = data.get("revision", 1)
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise _err(path, "revision", f"expected a positive integer, got {revision!r}")
    tables = data.get("family")
    if not isinstance(tables, list) or not tables:
        raise _err(path, "family", "expected at least one [[family]] table")
    families = tuple(_parse_family(path, i, t) for i, t in enumerate(tables))
    names = [f.name for f in families]
    if len(set(names)) != len(names):
        raise _err(path, "family", f"each family may appear once, got {names}")
    return Suite(
        name=str(data.get("name", path.stem)), path=path, families=families, revision=revision
    )
