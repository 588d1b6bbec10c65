"""Publishing to real registries: two Distribution registries on loopback and moto's ECR API."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import boto3

from harness.registry_reader import RegistryReader
from harness.services import RegistryService, moto_ecr_password, registry_down
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import (
    HUB_USER,
    PublishProject,
    Result,
    remove_project_leftovers,
    shipit_containers,
)


def report_of(result: Result) -> dict[str, Any]:
    """The push report: the whole stdout, or the first document when an error follows it."""
    text = result.stdout
    decoder = json.JSONDecoder()
    document, _ = decoder.raw_decode(text.lstrip())
    return document


def registries(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    push = report.get("push", report)
    return {entry["registry"]: entry for entry in push["registries"]}


def served_image_ids(
    registry_host: str, user: str, password: str, repository: str, tag: str
) -> set[str]:
    with RegistryReader(registry_host, user, password) as client:
        return client.image_ids(repository, tag)


def served_digest(
    registry_host: str, user: str, password: str, repository: str, tag: str
) -> str | None:
    with RegistryReader(registry_host, user, password) as client:
        return client.manifest_digest(repository, tag)


def ecr_client(project: PublishProject) -> Any:
    assert project.moto
    env = project.moto.env()
    return boto3.client(
        "ecr",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def docker_config_text() -> str:
    path = Path.home() / ".docker" / "config.json"
    return path.read_text() if path.exists() else ""


def test_ship_leaves_one_digest_in_both_registries(
    engine: Engine, publish_project: PublishProject
) -> None:
    project = publish_project
    assert project.ecr and project.hub
    result = project.shipit("ship", "--json")
    assert result.code == 0, result.output
    report = report_of(result)
    by_name = registries(report)
    image_id = report["build"]["image_id"]
    sha_tag = report["push"]["tags"][0]

    assert by_name["ecr"]["status"] == by_name["dockerhub"]["status"] == "pushed"
    assert by_name["ecr"]["digest"] == by_name["dockerhub"]["digest"]
    assert by_name["ecr"]["bytes_uploaded"] > 0
    for tag in (sha_tag, "latest"):
        assert (
            served_digest(project.ecr.host, "AWS", moto_ecr_password(), project.ecr_repository, tag)
            == by_name["ecr"]["digest"]
        )
        assert (
            served_digest(
                project.hub.host,
                project.hub.username or "",
                project.hub_token,
                project.hub_repository,
                tag,
            )
            == by_name["ecr"]["digest"]
        )
        assert image_id in served_image_ids(
            project.hub.host,
            project.hub.username or "",
            project.hub_token,
            project.hub_repository,
            tag,
        )

    # The repository was created in ECR, with scan on push, and the container is gone.
    described = ecr_client(project).describe_repositories(repositoryNames=[project.ecr_repository])
    created = described["repositories"][0]
    assert created["imageScanningConfiguration"]["scanOnPush"] is True
    assert created["imageTagMutability"] == "MUTABLE"
    assert shipit_containers(project.image) == []
    # No registry-named tag is left on the local image.
    local = engine.image(image_id)
    assert local is not None
    assert all(project.ecr.host not in tag and project.hub.host not in tag for tag in local.tags)

    second = project.shipit("push", "--json")
    assert second.code == 0, second.output
    again = registries(report_of(second))
    for entry in again.values():
        assert entry["status"] == "unchanged"
        assert entry["bytes_uploaded"] == 0
        assert entry["digest"] == by_name["ecr"]["digest"]


def test_push_refuses_an_image_that_was_not_smoke_tested(publish_project: PublishProject) -> None:
    assert publish_project.shipit("build").code == 0
    result = publish_project.shipit("push")
    assert result.code == ExitCode.PRECONDITION
    assert "has not passed a smoke test" in result.stderr
    assert "--skip-smoke" in result.stderr


def test_skip_smoke_pushes_one_registry(publish_project: PublishProject) -> None:
    assert publish_project.shipit("build").code == 0
    result = publish_project.shipit("push", "--to", "dockerhub", "--skip-smoke", "--json")
    assert result.code == 0, result.output
    assert list(registries(report_of(result))) == ["dockerhub"]


def test_wrong_docker_hub_token_fails_that_registry_only_and_never_shows_it(
    publish_project: PublishProject,
) -> None:
    project = publish_project
    wrong_token = "dckr_pat_WRONG_" + project.image[-10:]
    env = project.env(DOCKERHUB_TOKEN=wrong_token)
    assert project.shipit("build", env=env).code == 0
    assert project.shipit("run", "--no-smoke", env=env).code == 0
    assert project.shipit("smoke", env=env).code == 0
    result = project.shipit("push", "--debug", "--json", env=env)

    assert result.code == ExitCode.AUTH, result.output
    by_name = registries(report_of(result))
    assert by_name["dockerhub"]["status"] == "failed"
    assert by_name["dockerhub"]["error"]["class"] == "AuthError"
    assert by_name["ecr"]["status"] == "pushed"
    # latest moves only once every sha push succeeded.
    assert [tag["status"] for tag in by_name["ecr"]["tags"]] == ["pushed", "held-back"]
    assert "DOCKERHUB_TOKEN" in result.stderr.splitlines()[-1]
    for secret in (wrong_token, project.hub_token, moto_ecr_password()):
        assert secret not in result.output
        assert secret not in docker_config_text()


def test_registry_down_is_retried_then_reported_while_the_other_completes(
    publish_project: PublishProject,
) -> None:
    project = publish_project
    assert project.hub
    assert project.shipit("build").code == 0
    assert project.shipit("run").code == 0
    with registry_down(project.hub):
        result = project.shipit("push", "--json")
    assert result.code == ExitCode.REGISTRY_UNREACHABLE, result.output
    by_name = registries(report_of(result))
    assert by_name["ecr"]["status"] == "pushed"
    assert by_name["dockerhub"]["status"] == "failed"
    assert by_name["dockerhub"]["error"]["class"] in (
        "RegistryUnreachableError",
        "RegistryConnectionError",
    )
    assert "attempt 1 failed" in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("shipit: error: push failed for dockerhub")
    assert project.hub.host in last_line


def test_dry_run_changes_nothing(publish_project: PublishProject) -> None:
    project = publish_project
    assert project.ecr and project.hub
    assert project.shipit("build").code == 0
    assert project.shipit("run").code == 0
    result = project.shipit("push", "--dry-run", "--json")
    assert result.code == 0, result.output
    report = report_of(result)
    assert report["dry_run"] is True
    by_name = registries(report)
    assert by_name["ecr"]["notes"] == [
        f"would create ECR repository {project.ecr_repository} (MUTABLE, scan on push)"
    ]
    assert {tag["status"] for entry in by_name.values() for tag in entry["tags"]} == {"planned"}

    repositories = ecr_client(project).describe_repositories()["repositories"]
    assert project.ecr_repository not in [repo["repositoryName"] for repo in repositories]
    with RegistryReader(project.hub.host, project.hub.username, project.hub_token) as hub:
        assert hub.tags(project.hub_repository) == []


def test_missing_repository_is_an_error_when_creation_is_off(
    publish_project: PublishProject,
) -> None:
    env = publish_project.env(SHIPIT_ECR_CREATE_REPOSITORY="false")
    assert publish_project.shipit("build", env=env).code == 0
    result = publish_project.shipit("push", "--to", "ecr", "--skip-smoke", env=env)
    assert result.code == ExitCode.PUSH
    assert f"ECR repository {publish_project.ecr_repository} does not exist" in result.stderr


def _derived_base(engine: Engine, tag: str) -> str:
    """A second nginx base image: same files, another image id."""
    dockerfile = "FROM shipit-local/nginx:bookworm\nLABEL shipit.test.variant=b\n"
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    return tag


def commit_all(root: Path) -> None:
    subprocess.run(["git", "-C", str(root), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
        check=True,
    )


def stored_blob_count(project: PublishProject) -> int:
    assert project.ecr and project.hub and project.ecr.root_dir and project.hub.root_dir
    return sum(
        len(list(root.glob("**/blobs/sha256/*/*/data")))
        for root in (project.ecr.root_dir, project.hub.root_dir)
    )


def test_a_rerun_of_a_docker_build_of_a_shipped_commit_uploads_nothing_and_moves_no_tag(
    engine: Engine, publish_project: PublishProject
) -> None:
    """A CI runner that ships the same commit again starts with no image and no .shipit
    state; `docker build` rebuilds an image that differs only in its timestamps, which the
    label check finds to be of the same input. (An image shipit writes itself is the same
    bytes: tests/test_reproducible.py.)"""
    project = publish_project
    commit_all(project.root)
    env = project.env(
        SHIPIT_ECR_TAG_MUTABILITY="IMMUTABLE",
        SHIPIT_DOCKERHUB_TAG_MUTABILITY="IMMUTABLE",
        SHIPIT_BUILDER="docker",
    )
    first = project.shipit("ship", "--json", env=env)
    assert first.code == 0, first.output
    first_report = report_of(first)
    served_before = {
        name: (entry["digest"], [tag["digest"] for tag in entry["tags"]])
        for name, entry in registries(first_report).items()
    }
    blobs_before = stored_blob_count(project)

    remove_project_leftovers(project.image)
    shutil.rmtree(project.root / ".shipit")
    again = project.shipit("ship", "--json", env=env)
    assert again.code == 0, again.output
    report = report_of(again)
    assert report["build"]["built"] is True
    assert report["run"] is not None  # the rebuilt image was smoke-tested itself
    assert report["build"]["image_id"] != first_report["build"]["image_id"]
    for name, entry in registries(report).items():
        assert entry["status"] == "unchanged", entry
        assert entry["bytes_uploaded"] == 0
        assert (entry["digest"], [tag["digest"] for tag in entry["tags"]]) == served_before[name]
        assert "built from the same input" in again.stderr
    assert stored_blob_count(project) == blobs_before


def test_immutable_tag_conflict_is_a_clear_error(
    engine: Engine, publish_project: PublishProject
) -> None:
    project = publish_project
    assert project.ecr
    commit_all(project.root)
    env = project.env(SHIPIT_ECR_TAG_MUTABILITY="IMMUTABLE")
    first = project.shipit("ship", "--to", "ecr", "--json", env=env)
    assert first.code == 0, first.output
    first_report = report_of(first)
    sha_tag = first_report["push"]["tags"][0]
    assert not sha_tag.endswith("-dirty")

    other_base = _derived_base(engine, f"{project.image}-base:b")
    env_b = project.env(SHIPIT_ECR_TAG_MUTABILITY="IMMUTABLE", SHIPIT_BASE_IMAGE=other_base)
    second = project.shipit("ship", "--to", "ecr", "--json", env=env_b)
    assert second.code == ExitCode.PUSH, second.output
    error_line = second.stderr.strip().splitlines()[-1]
    assert f":{sha_tag} already holds another image" in error_line
    assert "immutable" in error_line
    # The registry still serves the first image under the tag.
    assert first_report["build"]["image_id"] in served_image_ids(
        project.ecr.host, "AWS", moto_ecr_password(), project.ecr_repository, sha_tag
    )


def test_ecr_token_comes_from_boto3_and_is_decoded_in_memory(
    publish_project: PublishProject,
) -> None:
    token = ecr_client(publish_project).get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    assert (user, password) == ("AWS", moto_ecr_password())


def test_three_registries_and_version_tags_from_a_git_tag(
    engine: Engine, publish_project: PublishProject
) -> None:
    """A third Distribution registry with htpasswd, declared as [[registries]], gets the same
    digest as ECR and Docker Hub under every tag a v1.4.2 git tag gives."""
    project = publish_project
    with RegistryService(username="quay-bot", password="quay-s3cret-token-77") as quay:
        (project.root / "shipit.toml").write_text(
            "tags = ['{sha}', '{version}', '{major}.{minor}', '{major}', 'latest']\n"
            "[[registries]]\n"
            'name = "quay"\n'
            f'repository = "{quay.host}/acme/site"\n'
            'username_env = "QUAY_USER"\n'
            'password_env = "QUAY_TOKEN"\n'
        )
        commit_all(project.root)
        subprocess.run(["git", "-C", str(project.root), "tag", "v1.4.2"], check=True)
        env = project.env(QUAY_USER="quay-bot", QUAY_TOKEN="quay-s3cret-token-77")
        result = project.shipit("ship", "--json", env=env)
        assert result.code == 0, result.output
        report = report_of(result)
        sha_tag = report["build"]["tags"][0].rsplit(":", 1)[1]
        assert report["push"]["tags"] == [sha_tag, "1.4.2", "1.4", "1", "latest"]
        by_name = registries(report)
        assert sorted(by_name) == ["dockerhub", "ecr", "quay"]
        digests = {entry["digest"] for entry in by_name.values()}
        assert len(digests) == 1, by_name
        (digest,) = digests
        served = {
            "ecr": (project.ecr.host, "AWS", moto_ecr_password(), project.ecr_repository),
            "dockerhub": (project.hub.host, HUB_USER, project.hub_token, project.hub_repository),
            "quay": (quay.host, "quay-bot", "quay-s3cret-token-77", "acme/site"),
        }
        for name, (host, user, password, repository) in served.items():
            statuses = [(tag["tag"], tag["status"]) for tag in by_name[name]["tags"]]
            assert statuses == [(tag, "pushed") for tag in report["push"]["tags"]], name
            with RegistryReader(host, user, password) as client:
                assert sorted(client.tags(repository)) == sorted(report["push"]["tags"])
                for tag in report["push"]["tags"]:
                    assert client.manifest_digest(repository, tag) == digest, (name, tag)
        assert "quay-s3cret-token-77" not in result.output
