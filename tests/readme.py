"""The README's runnable snippets, for the tests that run them (so the two never drift)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet(heading: str) -> str:
    """The first ```python block in the README section `heading` (a `##` or `###` heading;
    the section ends at the next one)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^#{{2,}} {re.escape(heading)}\n(.*?)(?=^#{{2,}} |\Z)", text, re.M | re.S)
    if match is None:
        raise LookupError(f"README.md has no heading {heading!r}")
    code = re.search(r"```python\n(.*?)```", match.group(1), re.S)
    if code is None:
        raise LookupError(f"README.md's section {heading!r} has no python block")
    return code.group(1)
