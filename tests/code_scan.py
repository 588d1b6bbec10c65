"""Which modules of a package hold a pattern: for tests that keep one rule in one home."""

from __future__ import annotations

import re
from pathlib import Path


def modules_matching(root: Path, pattern: re.Pattern[str], *, home: str) -> list[str]:
    """The modules under `root` (as paths from `root`'s parent) whose text matches `pattern`,
    other than the rule's own `home` (a file name)."""
    return sorted(
        path.relative_to(root.parent).as_posix()
        for path in root.rglob("*.py")
        if path.name != home and pattern.search(path.read_text(encoding="utf-8"))
    )
