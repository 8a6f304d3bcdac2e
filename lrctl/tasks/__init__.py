"""Task families, run specs and suites (see lrctl.tasks.families for the table)."""

from lrctl.tasks.base import FamilyConfig, RunSpec, Split, Task, TaskFamily
from lrctl.tasks.families import FAMILIES
from lrctl.tasks.suite import Suite, SuiteError, load_suite, resolve_suite_path

__all__ = [
    "FAMILIES",
    "FamilyConfig",
    "RunSpec",
    "Split",
    "Suite",
    "SuiteError",
    "Task",
    "TaskFamily",
    "load_suite",
    "resolve_suite_path",
]
