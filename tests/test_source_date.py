"""The one time an image says it was made: SOURCE_DATE_EPOCH, else the commit's time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipit.errors import ConfigError, ExitCode
from shipit.source_date import source_date
from shipit.vcs import Revision, revision

COMMIT = "a" * 40
COMMITTED = Revision(COMMIT, dirty=False, committed_at=1_700_000_000)


def test_source_date_epoch_wins_over_the_commit_and_an_empty_one_counts_as_unset() -> None:
    chosen = source_date({"SOURCE_DATE_EPOCH": "1234567890"}, COMMITTED)
    assert (chosen.seconds, chosen.rfc3339) == (1234567890, "2009-02-13T23:31:30Z")
    assert source_date({"SOURCE_DATE_EPOCH": ""}, COMMITTED).seconds == 1_700_000_000
    assert source_date({}, COMMITTED).rfc3339 == "2023-11-14T22:13:20Z"


def test_a_dirty_tree_keeps_its_commits_time_and_no_commit_time_is_the_epoch() -> None:
    dirty = Revision(COMMIT, dirty=True, committed_at=1_700_000_000)
    assert source_date({}, dirty).seconds == 1_700_000_000
    from_ci = Revision(COMMIT, dirty=False, source="GITHUB_SHA")  # no git: no commit time
    assert source_date({}, from_ci).rfc3339 == "1970-01-01T00:00:00Z"
    assert source_date({}, Revision("", dirty=False)).seconds == 0


@pytest.mark.parametrize(
    "value",
    ["1.5", "-1", " 12", "12 ", "1e9", "\uff11\uff12", "tomorrow", "253402300800", "9" * 60],
)
def test_a_malformed_source_date_epoch_is_one_config_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        source_date({"SOURCE_DATE_EPOCH": value}, COMMITTED)
    line = caught.value.one_line()
    assert caught.value.exit_code == ExitCode.CONFIG
    assert line.startswith("SOURCE_DATE_EPOCH=") and "\n" not in line
    assert len(line) < 250


def test_git_gives_the_commits_committer_time(tmp_path: Path) -> None:
    def git(*args: str, **env: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "page.html").write_text("<p>hi</p>\n")
    git("add", "-A")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "x",
        GIT_AUTHOR_DATE="@1500000000 +0000",
        GIT_COMMITTER_DATE="@1600000000 +0200",
    )
    git("config", "log.showSignature", "true")  # would add gpg's lines to a plain `git log`
    found = revision(tmp_path)
    assert found.commit == git("rev-parse", "HEAD")
    assert found.committed_at == 1_600_000_000  # the committer's, not the author's
    (tmp_path / "page.html").write_text("<p>edited</p>\n")
    assert revision(tmp_path).dirty and revision(tmp_path).committed_at == 1_600_000_000
