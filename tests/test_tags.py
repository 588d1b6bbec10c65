"""Tag templates (shipit/tags.py) against real git repositories, and the tags setting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipit.config import load_settings
from shipit.errors import ConfigError, ExitCode
from shipit.tags import (
    GitFacts,
    git_facts,
    plan_for_image,
    plan_tags,
    safe_branch,
    validate_templates,
)
from tests.conftest import Project

ALL = ["{sha}", "{sha_long}", "{branch}", "{version}", "{major}.{minor}", "{major}", "{date}"]
# 2026-03-04 23:30 in UTC-05:00 is already the 5th in UTC.
COMMIT_TIME = "2026-03-04T23:30:00-05:00"


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "GIT_AUTHOR_DATE": COMMIT_TIME,
            "GIT_COMMITTER_DATE": COMMIT_TIME,
            "HOME": str(repo),
            "PATH": "/usr/bin:/bin",
        },
    )
    return completed.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "index.html").write_text("hello\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_every_placeholder_from_a_release_tag(repo: Path) -> None:
    git(repo, "tag", "v1.4.2")
    commit = git(repo, "rev-parse", "HEAD")
    plan = plan_tags([*ALL, "latest"], git_facts(repo, environ={}))
    assert plan.ordered == (
        commit[:12],
        commit,
        "1.4.2",
        "main",
        "1.4",
        "1",
        "20260305",
        "latest",
    )
    assert plan.fixed == (commit[:12], commit, "1.4.2")
    assert plan.skipped == ()


def test_a_prerelease_goes_only_into_version(repo: Path) -> None:
    git(repo, "tag", "2.0.0-rc.1")  # no "v": also a version
    plan = plan_tags(["{version}", "{major}.{minor}", "{patch}"], git_facts(repo, environ={}))
    assert plan.ordered == ("2.0.0-rc.1",)
    assert [skipped.template for skipped in plan.skipped] == ["{major}.{minor}", "{patch}"]
    assert "2.0.0-rc.1 is a prerelease" in plan.skipped[0].one_line()


def test_the_newest_of_several_versions_and_not_other_tags(repo: Path) -> None:
    for tag in ("deploy-7", "v1.9.0-rc.2", "v1.9.0", "v1.10.0-beta", "release"):
        git(repo, "tag", tag)
    plan = plan_tags(["{version}", "{major}.{minor}.{patch}"], git_facts(repo, environ={}))
    # 1.10.0-beta is newer than 1.9.0; the duplicate tag is set once.
    assert plan.ordered == ("1.10.0-beta",)
    git(repo, "tag", "-d", "v1.10.0-beta")
    plan = plan_tags(["{version}", "{major}.{minor}.{patch}"], git_facts(repo, environ={}))
    assert plan.ordered == ("1.9.0",)


def test_without_a_version_tag_its_templates_are_skipped_with_the_reason(repo: Path) -> None:
    plan = plan_tags(["{sha}", "{version}", "v{major}", "latest"], git_facts(repo, environ={}))
    assert plan.moving == ("latest",)
    assert [skipped.template for skipped in plan.skipped] == ["{version}", "v{major}"]
    assert "no semver git tag" in plan.skipped[0].reason


def test_dirty_and_branch_names(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature/Login_page#2")
    (repo / "index.html").write_text("changed\n")
    commit = git(repo, "rev-parse", "HEAD")
    plan = plan_tags(["{sha}", "{sha_long}", "{branch}"], git_facts(repo, environ={}))
    assert plan.ordered == (f"{commit[:12]}-dirty", f"{commit}-dirty", "feature-Login_page-2")
    assert plan.moving == ("feature-Login_page-2",)


def test_a_detached_head_takes_the_branch_from_ci(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    facts = git_facts(repo, environ={})
    assert plan_tags(["{branch}"], facts).skipped[0].reason == "{branch}: HEAD is not on a branch"
    github = {"GITHUB_REF_TYPE": "branch", "GITHUB_REF_NAME": "release/2"}
    assert plan_tags(["{branch}"], git_facts(repo, environ=github)).ordered == ("release-2",)
    gitlab = {"CI_COMMIT_BRANCH": "main"}
    assert plan_tags(["{branch}"], git_facts(repo, environ=gitlab)).ordered == ("main",)
    tag_build = {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1.0.0"}
    assert plan_tags(["{branch}"], git_facts(repo, environ=tag_build)).ordered == ()


def test_outside_git_only_plain_text_and_the_build_id(tmp_path: Path) -> None:
    facts = git_facts(tmp_path, environ={})
    assert facts == GitFacts()
    assert plan_tags(["{sha}", "{date}", "latest"], facts).ordered == ("latest",)
    # The push passes the id the image was built as, which outside git is build-<id>.
    built = GitFacts(short_id="build-0123456789ab")
    assert plan_tags(["{sha}", "latest"], built).ordered == ("build-0123456789ab", "latest")


@pytest.mark.parametrize(
    ("branch", "tag"),
    [
        ("main", "main"),
        ("feat/x", "feat-x"),
        ("-x", "x"),
        (".hidden", "hidden"),
        ("a" * 200, "a" * 128),
    ],
)
def test_safe_branch(branch: str, tag: str) -> None:
    assert safe_branch(branch) == tag


@pytest.mark.parametrize(
    ("templates", "complaint"),
    [
        (["{sha}", "{commit}"], "tag template '{commit}' has an unknown placeholder {commit}"),
        (["{sha!r}"], "unknown placeholder {sha!r}"),
        (["{sha:>20}"], "unknown placeholder {sha:>20}"),
        (["{sha"], "tag template '{sha' is not valid"),
        (["v/{version}"], "tag template 'v/{version}' does not make a valid tag"),
        (["-{sha}"], "does not make a valid tag"),
        (["x" * 129], "does not make a valid tag"),
        ([], "tags is empty"),
    ],
)
def test_bad_templates_are_config_errors_naming_template_and_setting(
    templates: list[str], complaint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_templates(templates)
    assert complaint in caught.value.one_line()
    assert caught.value.one_line().startswith("tags")
    assert caught.value.exit_code == ExitCode.CONFIG


def test_a_value_that_breaks_a_tag_is_a_config_error() -> None:
    facts = GitFacts(commit="ab" * 20, branch="b" * 128)
    with pytest.raises(ConfigError, match=r"makes 'b+-abab"):
        plan_tags(["{branch}-{sha_long}"], facts)


def test_the_setting_from_file_environment_and_flag(tmp_path: Path) -> None:
    (tmp_path / "shipit.toml").write_text('tags = ["{sha}", "{major}", "stable"]\n')
    from_file = load_settings(tmp_path, environ={})
    assert from_file.tags == ("{sha}", "{major}", "stable")
    assert from_file.origins["tags"] == "shipit.toml"
    from_env = load_settings(tmp_path, environ={"SHIPIT_TAGS": " {version} , edge ,"})
    assert from_env.tags == ("{version}", "edge")
    from_flag = load_settings(tmp_path, {"tags": ["{date}"]}, environ={"SHIPIT_TAGS": "x"})
    assert (from_flag.tags, from_flag.origins["tags"]) == (("{date}",), "flag --tag")
    assert load_settings(tmp_path / "none", environ={}).tags == ("{sha}", "latest")


def test_bad_templates_on_the_command_line_exit_3_before_anything_else(project: Project) -> None:
    (project.root / "shipit.toml").write_text('tags = ["{sha}", "{shaa}"]\n')
    result = project.shipit("push", "--dry-run")
    assert result.code == ExitCode.CONFIG
    assert result.stderr.strip().splitlines() == [
        "shipit: error: shipit.toml: tags: tag template '{shaa}' has an unknown placeholder "
        "{shaa}; known placeholders: {sha}, {sha_long}, {branch}, {version}, {major}, {minor}, "
        "{patch}, {date}"
    ]
    flagged = project.shipit("ship", "--tag", "{sha}", "--tag", "bad tag", "--json")
    assert flagged.code == ExitCode.CONFIG
    assert "flag --tag: tags: tag template 'bad tag'" in flagged.stderr


def test_an_image_is_tagged_from_the_commit_it_was_built_from(repo: Path) -> None:
    git(repo, "tag", "v1.4.2")
    released = git(repo, "rev-parse", "HEAD")
    (repo / "index.html").write_text("next\n")
    git(repo, "commit", "-q", "-am", "next")
    templates = ["{sha}", "{sha_long}", "{version}", "latest"]
    # Built at the release, pushed after HEAD moved on: still the release's tags.
    old = plan_for_image(repo, templates, released, released[:12], environ={})
    assert old.ordered == (released[:12], released, "1.4.2", "latest")
    head = git(repo, "rev-parse", "HEAD")
    new = plan_for_image(repo, templates, head, head[:12] + "-dirty", environ={})
    assert new.ordered == (f"{head[:12]}-dirty", f"{head}-dirty", "latest")
    outside = plan_for_image(repo, templates, "", "build-0123456789ab", environ={})
    assert outside.ordered == ("build-0123456789ab", "latest")
