"""Import hygiene, read from the source (ast): no import circle among lrctl's modules, counting
imports inside functions too (a function-level import that dodges a circle is still one), and
the runtime controller stands alone."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrctl"

RUNTIME = (
    "lrctl.controller",
    "lrctl.features",
    "lrctl.actions",
    "lrctl.controller_file",
    "lrctl.grad_norms",
    "lrctl.last_steps",
    "lrctl.param_groups",
    "lrctl.distributed",
)
"""The runtime a user's loop imports (ARCHITECTURE.md, Layers): it may import only itself from
lrctl ..."""
RUNTIME_HELPERS = ("lrctl", "lrctl.atomic", "lrctl.errors", "lrctl.resources")
"""... and these (the package's lazy top level, file writes, the error types, where the shipped
files are; none imports anything heavy)."""
RUNTIME_THIRD_PARTY = {"torch", "numpy", "safetensors"}
"""Packages the runtime may use (besides the standard library)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imported_names(module: str) -> list[tuple[str, int, bool]]:
    """Every module `module` imports: (dotted name, line, at module level?). `from a import b`
    gives a.b when that is a module, else a."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in MODULES else base, node.lineno, id(node) in top))
    return out


@cache
def lrctl_edges() -> dict[str, frozenset[str]]:
    """module -> the lrctl modules it imports (anywhere in the file)."""
    edges: dict[str, frozenset[str]] = {}
    for m in MODULES:
        found = set()
        for name, _, _ in imported_names(m):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != m:
                found.add(name)
        edges[m] = frozenset(found)
    return edges


def find_cycles(edges: dict[str, frozenset[str]] | dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle_and_only_circles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(edges) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_imports() -> None:
    names = {n for n, _, _ in imported_names("lrctl.bench.runner")}
    assert "lrctl.bench.report" in names and "lrctl.bench.plan" in names


def test_no_import_circle_among_lrctl_modules() -> None:
    cycles = find_cycles(lrctl_edges())
    edges = lrctl_edges()
    detail = [
        f"{' <-> '.join(c)}: "
        + ", ".join(f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c)
        for c in cycles
    ]
    assert not cycles, "import circles:\n" + "\n".join(detail)


def test_library_modules_never_reach_up_into_the_benchmark() -> None:
    """The range test, the tasks and the training core draw nothing from lrctl.bench."""
    for module in MODULES:
        if module.startswith(("lrctl.bench", "lrctl.cli", "lrctl.demo")):
            continue
        up = [m for m in lrctl_edges()[module] if m.startswith("lrctl.bench")]
        assert not up, f"{module} imports {up}"


@pytest.mark.parametrize("module", RUNTIME)
def test_runtime_imports_only_the_runtime(module: str) -> None:
    allowed = set(RUNTIME) | {m for m in RUNTIME_HELPERS if m in MODULES}
    outside = sorted(lrctl_edges()[module] - allowed)
    assert not outside, f"{module} imports {outside} from the rest of lrctl"


def test_runtime_closure_needs_only_torch_numpy_safetensors() -> None:
    """Everything the runtime reaches, transitively, imports only the standard library and
    torch / numpy / safetensors: plugging a controller into a loop never imports gymnasium,
    stable-baselines3, pandas or scikit-learn."""
    edges = lrctl_edges()
    seen, todo = set(), list(RUNTIME)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += edges[m]
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for m in sorted(seen):
        third = {n.split(".")[0] for n, _, _ in imported_names(m)} - stdlib - {"lrctl"}
        assert third <= RUNTIME_THIRD_PARTY, f"{m} imports {sorted(third - RUNTIME_THIRD_PARTY)}"


LAYERS = {
    "runtime": (*RUNTIME, *RUNTIME_HELPERS),
    "inner runs": (
        "lrctl.tasks", "lrctl.optimizer_names", "lrctl.optimizers", "lrctl.hypergradient",
        "lrctl.functional_optim", "lrctl.baselines", "lrctl.inner_run", "lrctl.population",
        "lrctl.runs", "lrctl.training", "lrctl.range_test", "lrctl.plotting",
    ),
    "RL": (
        "lrctl.episodes", "lrctl.shocks", "lrctl.env", "lrctl.batched_env", "lrctl.vec_concat",
        "lrctl.hidden_features", "lrctl.family_reward_norm", "lrctl.obs_noise",
        "lrctl.policies", "lrctl.ppo", "lrctl.export", "lrctl.ensemble", "lrctl.card",
    ),
    "bench": ("lrctl.bench",),
    "faces": ("lrctl.demo", "lrctl.cli", "lrctl.integrations"),
}  # fmt: skip
"""ARCHITECTURE.md's layers, lowest first (a name covers its submodules)."""


def layer_of(module: str) -> int:
    """The index in LAYERS of the layer `module` belongs to."""
    for i, names in enumerate(LAYERS.values()):
        if module in names or any(module.startswith(n + ".") for n in names if n != "lrctl"):
            return i
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md; add it to LAYERS")


def test_imports_point_down_the_layers() -> None:
    """No module imports from a layer above its own (runtime <- inner runs <- RL, bench <-
    faces). The package's `__init__` is left out as an importer: its lazy `__getattr__` hands
    out the public API from any layer."""
    names = list(LAYERS)
    for module, imported in lrctl_edges().items():
        if module == "lrctl":  # the package's face: lazy attributes for the public API
            continue
        here = layer_of(module)
        for other in imported:
            there = layer_of(other)
            assert there <= here, (
                f"{module} ({names[here]}) imports {other} ({names[there]}): imports point down"
            )
