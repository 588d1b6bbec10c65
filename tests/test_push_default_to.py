"""Without --to, push and ship go to the registries the user configured (a repository set),
and nothing configured is one line before any build work."""

from __future__ import annotations

import json

from harness.registry_reader import RegistryReader
from shipit.errors import ExitCode
from tests.conftest import Project, PublishProject
from tests.test_publish import registries, report_of


def _without(env: dict[str, str], *prefixes: str) -> dict[str, str]:
    return {key: value for key, value in env.items() if not key.startswith(prefixes)}


def test_a_docker_hub_user_ships_to_docker_hub_only(publish_project: PublishProject) -> None:
    project = publish_project
    assert project.hub
    # No ECR repository and no AWS identity at all: a Docker Hub user.
    env = _without(project.env(), "SHIPIT_ECR_", "AWS_")
    result = project.shipit("ship", "--json", env=env)
    assert result.code == 0, result.output
    pushed = registries(report_of(result))
    assert list(pushed) == ["dockerhub"]
    with RegistryReader(project.hub.host, project.hub.username, project.hub_token) as hub:
        assert "latest" in hub.tags(project.hub_repository)


def test_an_ecr_user_s_dry_run_leaves_docker_hub_alone(publish_project: PublishProject) -> None:
    project = publish_project
    env = _without(project.env(), "SHIPIT_DOCKERHUB_", "DOCKERHUB_")
    assert project.shipit("build", env=env).code == 0
    result = project.shipit("push", "--dry-run", "--skip-smoke", "--json", env=env)
    assert result.code == 0, result.output
    assert list(registries(report_of(result))) == ["ecr"]


def test_to_in_shipit_toml_selects_and_the_flag_wins(publish_project: PublishProject) -> None:
    project = publish_project
    (project.root / "shipit.toml").write_text('to = ["dockerhub"]\n')
    assert project.shipit("build").code == 0
    from_file = project.shipit("push", "--dry-run", "--skip-smoke", "--json")
    assert from_file.code == 0, from_file.output
    assert list(registries(report_of(from_file))) == ["dockerhub"]
    from_flag = project.shipit("push", "--to", "ecr", "--dry-run", "--skip-smoke", "--json")
    assert from_flag.code == 0, from_flag.output
    assert list(registries(report_of(from_flag))) == ["ecr"]


def test_nothing_configured_is_one_line_before_any_build(project: Project) -> None:
    for command in ("ship", "push"):
        result = project.shipit(command)
        assert result.code == ExitCode.CONFIG, result.output
        assert result.stderr.strip().splitlines() == [
            "shipit: error: no registry to push to; set SHIPIT_ECR_REPOSITORY or "
            "SHIPIT_DOCKERHUB_REPOSITORY (or [[registries]] in shipit.toml)"
        ]
        assert result.stdout == ""
    assert not (project.root / ".shipit").exists()


def test_doctor_checks_the_configured_registries_and_fails_on_none(project: Project) -> None:
    env = project.env(SHIPIT_DOCKERHUB_REPOSITORY="acme/site")
    hub_only = project.shipit("doctor", "--json", env=env)
    names = [check["name"] for check in json.loads(hub_only.stdout)["checks"]]
    assert "dockerhub_repository" in names
    assert not [name for name in names if name.startswith(("ecr", "aws"))], names

    nothing = project.shipit("doctor", "--json")
    assert nothing.code == ExitCode.DOCTOR, nothing.output
    failed = [c for c in json.loads(nothing.stdout)["checks"] if c["outcome"] == "fail"]
    # The engine check is this machine's business (make test-unit runs with no engine).
    failed = [check for check in failed if check["name"] != "engine"]
    assert [check["name"] for check in failed] == ["registries"], failed
    assert failed[0]["detail"] == "no registry to push to"
