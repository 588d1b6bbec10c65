"""`shipit doctor` against the real parts: the engine, moto_server's STS, ECR and IAM, and the
loopback registries standing in for Docker Hub."""

from __future__ import annotations

import json
import uuid
from typing import Any

from harness.services import MOTO_ACCOUNT, free_port
from shipit.aws import CallerIdentity
from shipit.checks import Probe
from shipit.config import LOCAL_BASE_IMAGE, load_settings
from shipit.doctor import check_iam_simulation
from shipit.engine import Engine
from shipit.errors import ExitCode
from shipit.registries.catalog import registry_of, select_registries
from shipit.registries.ecr_registry import judge_identity
from tests.conftest import HUB_USER, PublishProject, Result
from tests.leftovers import shipit_uploads

ALL_CHECKS = [
    "engine",
    "published_ports",
    "push_uploads",
    "base_image",
    "platforms",
    "templates",
    "aws_region",
    "aws_credentials",
    "ecr_repository",
    "dockerhub_repository",
    "dockerhub_credentials",
]


def report_of(result: Result) -> dict[str, Any]:
    """The doctor's report: the one document on stdout, with the error inside on failure."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def outcomes(result: Result) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in report_of(result)["checks"]}


def check_named(result: Result, name: str) -> dict[str, Any]:
    (found,) = [check for check in report_of(result)["checks"] if check["name"] == name]
    assert isinstance(found, dict)
    return found


def error_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_every_check_passes_in_the_test_environment(
    engine: Engine, publish_project: PublishProject
) -> None:
    result = publish_project.shipit("doctor")
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "shipit doctor"
    rows = {line.split()[1]: line for line in lines[2:]}
    assert list(rows) == ALL_CHECKS
    for name, row in rows.items():
        assert row.startswith("ok "), f"{name}: {row}"
    assert f"{LOCAL_BASE_IMAGE} is present" in rows["base_image"]
    if shipit_uploads():
        assert "uploads it to every registry itself" in rows["push_uploads"]
    else:
        assert "the engine pushes: " in rows["push_uploads"]
    assert f"(account {MOTO_ACCOUNT})" in rows["aws_credentials"]
    assert "the first push creates it" in rows["ecr_repository"]
    assert publish_project.hub_repository in rows["dockerhub_repository"]
    assert "from environment DOCKERHUB_USERNAME/DOCKERHUB_TOKEN" in rows["dockerhub_credentials"]


def test_json_report_shape(engine: Engine, publish_project: PublishProject) -> None:
    project = publish_project
    assert project.moto
    project.moto.client("ecr").create_repository(repositoryName=project.ecr_repository)
    result = project.shipit("doctor", "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"ok", "checks"}
    assert report["ok"] is True
    assert [check["name"] for check in report["checks"]] == ALL_CHECKS
    for check in report["checks"]:
        assert set(check) == {"name", "outcome", "detail", "hint"}
        assert check["outcome"] == "ok"
        assert check["detail"]
    assert check_named(result, "ecr_repository")["detail"].endswith("exists (tags MUTABLE)")


def test_the_docker_hub_token_never_appears(
    engine: Engine, publish_project: PublishProject
) -> None:
    result = publish_project.shipit("doctor", "--debug", "--json")
    assert result.code == 0, result.output
    assert publish_project.hub_token
    assert publish_project.hub_token not in result.output
    human = publish_project.shipit("doctor", "--debug")
    assert publish_project.hub_token not in human.output


def test_the_credentials_check_names_the_user_and_source_only(
    publish_project: PublishProject,
) -> None:
    # In process, so the Ui's redaction cannot hide a detail that carries the token.
    environ = publish_project.env()
    settings = load_settings(publish_project.root, environ=environ)
    hub = registry_of(select_registries(settings, "dockerhub")[0], settings)
    [check] = [c for c in hub.doctor_checks(Probe(environ)) if c.name == "dockerhub_credentials"]
    assert check.outcome == "ok"
    assert publish_project.hub_token not in json.dumps(check.to_json())
    assert f"user {HUB_USER} for {settings.dockerhub_registry}" in check.detail


def test_a_missing_docker_hub_token_fails_with_15_naming_the_check(
    engine: Engine, publish_project: PublishProject
) -> None:
    env = publish_project.env()
    del env["DOCKERHUB_TOKEN"]
    result = publish_project.shipit("doctor", "--json", env=env)
    assert result.code == ExitCode.DOCTOR, result.output
    found = outcomes(result)
    assert found.pop("dockerhub_credentials") == "fail"
    assert set(found.values()) == {"ok"}
    failed = check_named(result, "dockerhub_credentials")
    assert "DOCKERHUB_TOKEN" in failed["hint"]
    assert error_line(result) == (
        "shipit: error: 1 of 11 checks failed: dockerhub_credentials; fix what the table says "
        "for each and run `shipit doctor` again"
    )
    # Only ECR: Docker Hub is not checked at all.
    only_ecr = publish_project.shipit("doctor", "--to", "ecr", "--json", env=env)
    assert only_ecr.code == 0, only_ecr.output
    assert "dockerhub_credentials" not in outcomes(only_ecr)


def test_a_base_image_that_cannot_be_pulled_fails_with_the_local_one_as_hint(
    engine: Engine, publish_project: PublishProject
) -> None:
    missing = f"127.0.0.1:{free_port()}/shipit-missing/nginx:{uuid.uuid4().hex[:8]}"
    env = publish_project.env(SHIPIT_BASE_IMAGE=missing)
    result = publish_project.shipit("doctor", env=env)
    assert result.code == ExitCode.DOCTOR, result.output
    (row,) = [line for line in result.stdout.splitlines() if " base_image " in line]
    assert row.startswith("FAIL")
    assert f"{missing} is not present and cannot be pulled" in row
    assert f"--base-image {LOCAL_BASE_IMAGE}" in row
    assert "base_image" in error_line(result)
    assert engine.image(missing) is None


def test_a_missing_repository_fails_when_shipit_may_not_create_it(
    engine: Engine, publish_project: PublishProject
) -> None:
    env = publish_project.env(SHIPIT_ECR_CREATE_REPOSITORY="false")
    result = publish_project.shipit("doctor", "--to", "ecr", "--json", env=env)
    assert result.code == ExitCode.DOCTOR, result.output
    failed = check_named(result, "ecr_repository")
    assert failed["outcome"] == "fail"
    assert f"ECR repository {publish_project.ecr_repository} does not exist" in failed["detail"]
    assert "ecr_create_repository" in failed["hint"]


def test_without_a_region_the_credentials_are_still_checked(
    engine: Engine, publish_project: PublishProject
) -> None:
    env = publish_project.env()
    del env["AWS_REGION"], env["AWS_DEFAULT_REGION"]
    result = publish_project.shipit("doctor", "--to", "ecr", "--json", env=env)
    assert result.code == ExitCode.DOCTOR, result.output
    found = outcomes(result)
    assert found["aws_region"] == "fail"
    assert found["aws_credentials"] == "ok"
    assert check_named(result, "ecr_repository") == {
        "name": "ecr_repository",
        "outcome": "warn",
        "detail": "not checked: no AWS region",
        "hint": "",
    }
    assert "aws_region" in error_line(result)
    assert "ecr_repository" not in error_line(result)


def test_online_simulation_of_an_assumed_role_is_a_warning_on_moto(
    engine: Engine, publish_project: PublishProject
) -> None:
    """moto_server has no SimulatePrincipalPolicy: the doctor says so and goes on."""
    project = publish_project
    assert project.moto
    role = f"ci-deploy-{uuid.uuid4().hex[:8]}"
    project.moto.client("iam").create_role(
        RoleName=role, Path="/deploy/", AssumeRolePolicyDocument="{}"
    )
    credentials = project.moto.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{MOTO_ACCOUNT}:role/deploy/{role}", RoleSessionName="gh-42"
    )["Credentials"]
    env = project.env(
        AWS_ACCESS_KEY_ID=credentials["AccessKeyId"],
        AWS_SECRET_ACCESS_KEY=credentials["SecretAccessKey"],
        AWS_SESSION_TOKEN=credentials["SessionToken"],
    )
    result = project.shipit("doctor", "--online", "--json", env=env)
    assert result.code == 0, result.output
    caller = check_named(result, "aws_credentials")
    assert caller["detail"].startswith(f"arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/{role}/gh-42")
    simulated = check_named(result, "iam_permissions")
    assert simulated["outcome"] == "warn"
    # The session was mapped back to the role, path included, before IAM was asked.
    assert simulated["detail"] == (
        "could not simulate (could not read the answer while simulating the "
        f"policies of arn:aws:iam::{MOTO_ACCOUNT}:role/deploy/{role} "
        "(iam:SimulatePrincipalPolicy): it is not an AWS response)"
    )
    assert "`shipit iam check" in simulated["hint"]
    assert "iam_permissions" not in outcomes(project.shipit("doctor", "--json", env=env))


def test_simulation_needs_an_identity_iam_can_simulate(publish_project: PublishProject) -> None:
    settings = load_settings(publish_project.root, environ=publish_project.env())
    check = check_iam_simulation(
        settings, CallerIdentity(MOTO_ACCOUNT, f"arn:aws:sts::{MOTO_ACCOUNT}:federated-user/bo")
    )
    assert check.outcome == "warn"
    assert "federated-user/bo is not an IAM user or role session" in check.detail
    assert check_iam_simulation(settings, None).outcome == "warn"


def test_the_root_user_fails_with_the_reason() -> None:
    check = judge_identity(CallerIdentity(MOTO_ACCOUNT, f"arn:aws:iam::{MOTO_ACCOUNT}:root"))
    assert check.outcome == "fail"
    assert f"root user of account {MOTO_ACCOUNT}" in check.detail
    assert "cannot be limited by a policy" in check.detail
    assert "`shipit iam policy`" in check.hint
    user = judge_identity(CallerIdentity(MOTO_ACCOUNT, f"arn:aws:iam::{MOTO_ACCOUNT}:user/ci"))
    assert user.outcome == "ok"


def test_online_logs_in_to_docker_hub_and_names_a_refused_token(
    engine: Engine, publish_project: PublishProject
) -> None:
    project = publish_project
    good = project.shipit("doctor", "--online", "--to", "dockerhub", "--json")
    assert good.code == 0, good.output
    login = check_named(good, "dockerhub_login")
    assert login == {
        "name": "dockerhub_login",
        "outcome": "ok",
        "detail": f"{HUB_USER} logged in to {project.hub.host if project.hub else ''}",
        "hint": "",
    }
    assert "dockerhub_login" not in outcomes(
        project.shipit("doctor", "--to", "dockerhub", "--json")
    )

    wrong_token = "dckr_pat_" + uuid.uuid4().hex
    bad = project.shipit(
        "doctor",
        "--online",
        "--to",
        "dockerhub",
        "--json",
        env=project.env(DOCKERHUB_TOKEN=wrong_token),
    )
    assert bad.code == ExitCode.DOCTOR, bad.output
    refused = check_named(bad, "dockerhub_login")
    assert refused["outcome"] == "fail"
    assert "DOCKERHUB_TOKEN" in refused["hint"]
    assert wrong_token not in bad.output
