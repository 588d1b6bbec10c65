"""What a CI script gets when a push does not happen: a dry run's -q lines, and in GitHub
Actions a step summary that says what failed, even for a settings error before any push."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipit.errors import ExitCode
from tests.conftest import Project, PublishProject


def test_a_quiet_dry_run_prints_each_reference_it_would_push(
    publish_project: PublishProject,
) -> None:
    project = publish_project
    assert project.ecr and project.hub
    assert project.shipit("build").code == 0
    planned = project.shipit("push", "--dry-run", "--skip-smoke", "--json")
    assert planned.code == 0, planned.output
    document = json.loads(planned.stdout)
    expected = [
        f"{target['reference']}:{tag} (dry run)"
        for target in document["registries"]
        for tag in document["tags"]
    ]
    quiet = project.shipit("push", "--dry-run", "--skip-smoke", "-q")
    assert quiet.code == 0, quiet.output
    assert quiet.stderr == ""
    assert quiet.stdout.splitlines() == expected
    ecr = f"{project.ecr.host}/{project.ecr_repository}"
    hub = f"{project.hub.host}/{project.hub_repository}"
    assert f"{ecr}:latest (dry run)" in expected and f"{hub}:latest (dry run)" in expected
    # A script takes the first field as the reference: it never holds a digest it cannot know.
    assert all("@" not in line.split()[0] for line in quiet.stdout.splitlines())


def _step_files(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    outputs, summary = tmp_path / "github_output", tmp_path / "step_summary"
    return (
        outputs,
        summary,
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(outputs),
            "GITHUB_STEP_SUMMARY": str(summary),
        },
    )


@pytest.mark.parametrize("command", ["push", "ship"])
@pytest.mark.parametrize(
    ("setting", "named"),
    [('to = ["nowhere"]', "nowhere"), ('tags = ["{shaa}"]', "{shaa}"), ("port = 0", "port")],
)
def test_a_bad_setting_gets_a_step_summary_and_no_outputs(
    project: Project, tmp_path: Path, command: str, setting: str, named: str
) -> None:
    (project.root / "shipit.toml").write_text(setting + "\n")
    outputs, summary, github = _step_files(tmp_path)
    result = project.shipit(command, "-q", env=project.env(**github))
    assert result.code == ExitCode.CONFIG, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("shipit: error: ") and named in line
    assert summary.read_text() == (
        f"### shipit {command}: failed\n\n**Failed:** {line.removeprefix('shipit: error: ')}\n\n"
    )
    assert not outputs.exists()


def test_no_repository_set_gets_a_step_summary(project: Project, tmp_path: Path) -> None:
    outputs, summary, github = _step_files(tmp_path)
    result = project.shipit("push", env=project.env(**github))
    assert result.code == ExitCode.CONFIG, result.output
    assert "**Failed:** no registry to push to; set SHIPIT_ECR_REPOSITORY" in summary.read_text()
    assert not outputs.exists()


def test_a_bad_option_gets_a_step_summary(project: Project, tmp_path: Path) -> None:
    outputs, summary, github = _step_files(tmp_path)
    result = project.shipit("ship", "--to", env=project.env(**github))
    assert result.code == ExitCode.USAGE, result.output
    text = summary.read_text()
    assert text.startswith("### shipit ship: failed\n\n**Failed:** ") and "--to" in text
    assert not outputs.exists()


def test_a_refused_login_gets_a_summary_without_the_secret(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    outputs, summary, github = _step_files(tmp_path)
    wrong = "dckr_pat_wrong-token-for-the-step-summary"
    env = project.env(
        **github,
        DOCKERHUB_TOKEN=wrong,
        SHIPIT_ECR_REPOSITORY="",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    assert project.shipit("build", env=env).code == 0
    result = project.shipit("push", "--skip-smoke", "--to", "dockerhub", env=env)
    assert result.code != 0, result.output
    failure = result.stderr.strip().splitlines()[-1].removeprefix("shipit: error: ")
    text = summary.read_text()
    assert text.startswith("### shipit push: failed\n\n")
    assert f"**Failed:** {failure}" in text and "| dockerhub |" in text
    assert wrong not in text + result.output
    assert not outputs.exists()
