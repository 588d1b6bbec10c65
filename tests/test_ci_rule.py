"""One rule says whether shipit runs in CI, for plain output, progress bars and the ECR
token cache's default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shipit.ci_kind import in_ci
from tests.code_scan import modules_matching

SHIPIT = Path(__file__).resolve().parent.parent / "shipit"


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", "woodpecker"])
def test_ci_set_to_anything_but_false_is_ci(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "False", "no", "off", " "])
def test_ci_unset_or_false_is_not_ci(value: str) -> None:
    assert not in_ci({"CI": value})
    assert not in_ci({})


CI_READ = re.compile(r"""environ(?:\.get\(|\[)\s*["']CI["']""")


def test_no_module_but_ci_kind_reads_the_ci_variable(tmp_path: Path) -> None:
    assert modules_matching(SHIPIT, CI_READ, home="ci_kind.py") == []
    package = tmp_path / "shipit"
    package.mkdir()
    (package / "own.py").write_text('import os\nPLAIN = bool(os.environ.get("CI"))\n')
    assert modules_matching(package, CI_READ, home="ci_kind.py") == ["shipit/own.py"]
