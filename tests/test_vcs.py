"""Where a build's commit comes from (shipit/vcs.py): git, or the CI service's variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.tags import plan_for_image
from shipit.vcs import revision

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_without_git_on_path_the_ci_variable_names_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    github = revision(tmp_path, {"GITHUB_SHA": SHA})
    assert (github.commit, github.source, github.tag) == (SHA, "GITHUB_SHA", SHA[:12])
    gitlab = revision(tmp_path, {"CI_COMMIT_SHA": SHA.upper()})
    assert (gitlab.commit, gitlab.source) == (SHA, "CI_COMMIT_SHA")
    none = revision(tmp_path, {})
    assert none.commit == "" and none.tag == ""
    assert none.why_none == "git is not on PATH and neither GITHUB_SHA nor CI_COMMIT_SHA is set"


def test_a_ci_variable_that_is_not_a_commit_id_is_not_used(tmp_path: Path) -> None:
    bad = revision(tmp_path, {"GITHUB_SHA": "main", "CI_COMMIT_SHA": SHA})
    assert bad.commit == ""
    assert bad.why_none == (
        "git knows no commit of the project and GITHUB_SHA is not a 40-digit hex id"
    )
    # Without ci_environ (shipit init pins its own checkout) the variables are not asked.
    assert revision(tmp_path).commit == ""


def test_the_long_sha_of_an_image_built_outside_git_comes_from_its_label(tmp_path: Path) -> None:
    plan = plan_for_image(tmp_path, ["{sha}", "{sha_long}"], SHA, SHA[:12], environ={})
    assert plan.ordered == (SHA[:12], SHA)
