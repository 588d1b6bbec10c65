"""The documents stay true to the code: the generated settings reference is current, every
relative link points at a file (and heading) that exists, and the exit-code tables are
errors.py's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shipit.errors import ExitCode
from shipit.settings_reference import REGENERATE, reference

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "bench" / "README.md"],
) + sorted((REPO / "docs").glob("*.md"))
# [text](target) and [text]: target, outside code spans and blocks.
_INLINE_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_REFERENCE_LINK = re.compile(r"^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_links(markdown: str) -> list[str]:
    prose = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("    "))
    targets = _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)
    return [target for target in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def anchors(markdown: str) -> set[str]:
    """The fragment each heading gets, as GitHub makes it: lower case, punctuation dropped,
    blanks as hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _FENCE.sub("", markdown), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        path, _, fragment = target.partition("#")
        linked = (document.parent / path) if path else document
        if not linked.exists() or (
            fragment
            and linked.suffix == ".md"
            and fragment not in anchors(linked.read_text(encoding="utf-8"))
        ):
            broken.append(target)
    return broken


def test_the_link_finder_sees_links_and_skips_code() -> None:
    markdown = (
        "See [stages](docs/stages.md#build), [site](https://example.com) and [top](#top).\n"
        "`[not](a-link.md)`\n\n    [indented](code.md)\n\n```\n[fenced](code.md)\n```\n"
        "[ref]: docs/ci.md\n"
    )
    assert relative_links(markdown) == ["docs/stages.md#build", "#top", "docs/ci.md"]


def test_a_missing_file_or_heading_is_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "here.md").write_text("# Here\n\n## The `[[registries]]` entries\n")
    document = tmp_path / "doc.md"
    document.write_text(
        "# Doc\n[a](here.md) [b](gone.md#part) [c](here.md#the-registries-entries)\n"
        "[d](here.md#nowhere) [e](#doc) [f](#gone)\n"
    )
    assert broken_links(document) == ["gone.md#part", "here.md#nowhere", "#gone"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_points_at_a_file_that_exists(document: Path) -> None:
    assert broken_links(document) == []


def test_the_documents_that_must_exist_do() -> None:
    for name in ("stages", "iam", "configuration", "settings", "ci", "rerun"):
        assert (REPO / "docs" / f"{name}.md") in DOCUMENTS
    assert (REPO / "CONTRIBUTING.md").is_file()


def test_the_settings_reference_is_current() -> None:
    stored = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert stored == reference(), f"docs/settings.md is stale: run `{REGENERATE}` (make docs)"


def test_the_settings_reference_command_prints_the_reference() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "shipit.settings_reference"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert printed == reference()
    assert "| `ecr_repository` | `SHIPIT_ECR_REPOSITORY` |" in printed
    assert "| `aws_region` | `SHIPIT_AWS_REGION`, `AWS_REGION`, `AWS_DEFAULT_REGION` |" in printed
    assert "| `tags` | `SHIPIT_TAGS` | `--tag` (push, ship) | list of strings |" in printed
    assert "| `username_env` |" in printed


def listed_exit_codes(document: Path, heading: str) -> list[int]:
    text = document.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [int(code) for code in re.findall(r"^\|\s*(\d+)\s*\|", section, re.MULTILINE)]


@pytest.mark.parametrize(
    ("document", "heading"),
    [("README.md", "Exit codes"), ("docs/commands.md", "Exit codes in full")],
)
def test_the_exit_code_tables_list_every_code_once_and_no_other(
    document: str, heading: str
) -> None:
    assert listed_exit_codes(REPO / document, heading) == [int(code) for code in ExitCode]
