"""Ships through ECR's per-call IAM, with exactly the policy `shipit iam policy` prints.

ECR judges every Registry API call by an IAM action on the repository (harness/ecr_iam.py
stands in for it in front of the loopback registry), and every ECR API call too: a moto
server of this module's own enforces IAM for the user the printed policy is attached to, so
DescribeRepositories, CreateRepository and GetAuthorizationToken are judged as well.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.ecr_iam import (
    AccessKey,
    EcrIamProxy,
    create_user,
    decide,
    enforce_iam,
    needed_access,
    without_mount,
)
from harness.services import MOTO_ACCOUNT, MotoService, RegistryService, moto_ecr_password
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import PublishProject, Result, remove_project_leftovers
from tests.test_publish import commit_all, registries, report_of

ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
ARN = f"arn:aws:ecr:us-east-1:{MOTO_ACCOUNT}:repository/site"
MANIFEST = "sha256:" + "a" * 64
BLOB = "sha256:" + "b" * 64


# -- the stand-in's own rules (no engine) --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/v2/", []),
        ("GET", "/v2/_catalog?n=100", [("ecr:DescribeRepositories", "*")]),
        ("GET", "/v2/team/site/tags/list", [("ecr:ListImages", "team/site")]),
        ("HEAD", "/v2/team/site/manifests/latest", [("ecr:BatchGetImage", "team/site")]),
        ("GET", "/v2/site/manifests/" + MANIFEST, [("ecr:BatchGetImage", "site")]),
        ("PUT", "/v2/site/manifests/latest", [("ecr:PutImage", "site")]),
        ("DELETE", "/v2/site/manifests/" + MANIFEST, [("ecr:BatchDeleteImage", "site")]),
        ("HEAD", "/v2/site/blobs/" + BLOB, [("ecr:BatchCheckLayerAvailability", "site")]),
        ("GET", "/v2/site/blobs/" + BLOB, [("ecr:GetDownloadUrlForLayer", "site")]),
        ("POST", "/v2/site/blobs/uploads/", [("ecr:InitiateLayerUpload", "site")]),
        (
            "POST",
            f"/v2/site/blobs/uploads/?mount={BLOB}&from=team/base",
            [("ecr:InitiateLayerUpload", "site"), ("ecr:GetDownloadUrlForLayer", "team/base")],
        ),
        (
            "POST",
            f"/v2/site/blobs/uploads/?digest={BLOB}",
            [
                ("ecr:InitiateLayerUpload", "site"),
                ("ecr:UploadLayerPart", "site"),
                ("ecr:CompleteLayerUpload", "site"),
            ],
        ),
        ("PATCH", "/v2/site/blobs/uploads/0f3c?_state=x", [("ecr:UploadLayerPart", "site")]),
        (
            "PUT",
            f"/v2/site/blobs/uploads/0f3c?_state=x&digest={BLOB}",
            [("ecr:CompleteLayerUpload", "site")],
        ),
        (
            "PUT+body",
            f"/v2/site/blobs/uploads/0f3c?digest={BLOB}",
            [("ecr:UploadLayerPart", "site"), ("ecr:CompleteLayerUpload", "site")],
        ),
    ],
)
def test_each_registry_request_needs_its_ecr_action(
    method: str, path: str, needed: list[tuple[str, str]]
) -> None:
    method, _, body = method.partition("+")
    found = needed_access(method, path, has_body=bool(body))
    assert found is not None
    assert [(access.action, access.repository) for access in found] == needed


def test_without_blob_mounting_a_mount_is_a_plain_upload() -> None:
    mount = f"/v2/site/blobs/uploads/?mount={BLOB}&from=team/base"
    assert without_mount(mount) == "/v2/site/blobs/uploads/"
    assert without_mount(f"/v2/site/blobs/uploads/?digest={BLOB}&from=x") == (
        f"/v2/site/blobs/uploads/?digest={BLOB}"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v2/site/blobs/" + BLOB),
        ("POST", "/v2/site/manifests/latest"),
        ("GET", "/v2/site/referrers/" + BLOB),
        ("GET", "/metrics"),
    ],
)
def test_requests_ecr_does_not_serve_are_unsupported(method: str, path: str) -> None:
    assert needed_access(method, path) is None


def test_the_stand_ins_evaluation_is_default_deny_with_explicit_deny_first() -> None:
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": ["ecr:Batch*", "ECR:putimage"], "Resource": ARN},
            {"Effect": "Deny", "Action": "ecr:BatchDeleteImage", "Resource": "*"},
        ]
    }
    assert decide(policy, "ecr:BatchGetImage", ARN) == "allowed"
    assert decide(policy, "ecr:PutImage", ARN) == "allowed"
    assert decide(policy, "ecr:BatchDeleteImage", ARN) == "explicit_deny"
    assert decide(policy, "ecr:BatchGetImage", ARN + "-other") == "implicit_deny"
    assert decide(policy, "ecr:UploadLayerPart", ARN) == "implicit_deny"
    with pytest.raises(ValueError, match="Condition"):
        decide({"Statement": [{"Effect": "Allow", "Action": "*", "Condition": {}}]}, "a:b", "*")


@pytest.mark.parametrize("blob_mounting", [False, True])
def test_the_stand_in_answers_as_ecr_does(
    ecr_registry: RegistryService, blob_mounting: bool
) -> None:
    """A refusal is ECR's 403 DENIED naming the action; a mount needs the source's blob read
    only while the registry's blob mounting is on."""
    repository = f"iam-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:ecr:us-east-1:{MOTO_ACCOUNT}:repository/{repository}"
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": ["ecr:InitiateLayerUpload"], "Resource": arn},
        ]
    }
    password = moto_ecr_password()
    with EcrIamProxy(
        "127.0.0.1",
        ecr_registry.port,
        policy,
        credentials=("AWS", password),
        blob_mounting=blob_mounting,
    ) as proxy:
        auth = ("AWS", password)
        assert requests.get(f"{proxy.url}/v2/", timeout=10).status_code == 401
        assert requests.get(f"{proxy.url}/v2/", auth=auth, timeout=10).status_code == 200
        head = requests.head(f"{proxy.url}/v2/{repository}/blobs/{BLOB}", auth=auth, timeout=10)
        assert head.status_code == 403
        refused = requests.get(
            f"{proxy.url}/v2/{repository}/manifests/latest", auth=auth, timeout=10
        )
        assert refused.status_code == 403
        assert refused.json() == {
            "errors": [
                {
                    "code": "DENIED",
                    "message": f"User: arn:aws:iam::{MOTO_ACCOUNT}:user/shipit-ci is not "
                    f"authorized to perform: ecr:BatchGetImage on resource: {arn} because no "
                    "identity-based policy allows the ecr:BatchGetImage action",
                }
            ]
        }
        mount = requests.post(
            f"{proxy.url}/v2/{repository}/blobs/uploads/?mount={BLOB}&from=team/base",
            auth=auth,
            timeout=10,
        )
        assert mount.status_code == (403 if blob_mounting else 202), mount.text
        assert proxy.refused()[-1].action == (
            "ecr:GetDownloadUrlForLayer" if blob_mounting else "ecr:BatchGetImage"
        )
        assert {call.action for call in proxy.refused()} <= {
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        }


# -- ships through the stand-in and moto's IAM ---------------------------------------------


@dataclass
class IamAws:
    moto: MotoService
    admin: AccessKey


@pytest.fixture(scope="module")
def iam_aws() -> Iterator[IamAws]:
    """A moto server that enforces IAM (its own: enforcing cannot be turned off for others)."""
    with MotoService() as moto:
        admin = create_user(moto.endpoint_url, "shipit-admin", ADMIN_POLICY)
        enforce_iam(moto.endpoint_url)
        yield IamAws(moto, admin)


@dataclass
class Enforced:
    """One project whose ECR pushes are judged by `policy`, in the stand-in and in moto."""

    project: PublishProject
    aws: IamAws
    registry: RegistryService
    tmp: Path
    policy: dict[str, Any] = field(default_factory=dict)
    user: AccessKey | None = None
    proxy: EcrIamProxy | None = None

    def admin_env(self, project: PublishProject | None = None) -> dict[str, str]:
        return (project or self.project).env(
            AWS_ENDPOINT_URL=self.aws.moto.endpoint_url, **self.aws.admin.env()
        )

    def printed_policy(self) -> dict[str, Any]:
        """What `shipit iam policy` prints for this project (the account from STS)."""
        result = self.project.shipit("iam", "policy", env=self.admin_env())
        assert result.code == 0, result.output
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def grant(self, policy: dict[str, Any]) -> None:
        """A new IAM user with exactly `policy`, and the stand-in judging by it."""
        self.policy = policy
        name = f"ci-{uuid.uuid4().hex[:10]}"
        self.user = create_user(self.aws.moto.endpoint_url, name, policy, signer=self.aws.admin)
        if self.proxy is None:
            self.proxy = EcrIamProxy(
                "127.0.0.1",
                self.registry.port,
                policy,
                credentials=("AWS", moto_ecr_password()),
                user=name,
            ).start()
        else:
            self.proxy.set_policy(policy)
            self.proxy.principal = f"arn:aws:iam::{MOTO_ACCOUNT}:user/{name}"

    def env(self, project: PublishProject | None = None, **extra: str) -> dict[str, str]:
        """A CI runner's environment: the user's keys, and a cache folder of its own."""
        assert self.user is not None and self.proxy is not None
        runner = extra.pop("runner", "first")
        return (project or self.project).env(
            AWS_ENDPOINT_URL=self.aws.moto.endpoint_url,
            SHIPIT_ECR_REGISTRY=self.proxy.host,
            XDG_CACHE_HOME=str(self.tmp / f"cache-{runner}"),
            **self.user.env(),
            **extra,
        )

    def ship(self, *args: str, project: PublishProject | None = None, **extra: str) -> Result:
        return (project or self.project).shipit(
            "ship", "--json", *args, env=self.env(project, **extra)
        )

    def granted_actions(self) -> set[str]:
        return {action for statement in self.policy["Statement"] for action in statement["Action"]}

    def assert_nothing_refused(self) -> None:
        assert self.proxy is not None
        assert self.proxy.refused() == []
        assert self.proxy.actions_seen() <= self.granted_actions()


@pytest.fixture
def enforced(
    publish_project: PublishProject,
    iam_aws: IamAws,
    ecr_registry: RegistryService,
    tmp_path: Path,
) -> Iterator[Enforced]:
    commit_all(publish_project.root)
    setup = Enforced(publish_project, iam_aws, ecr_registry, tmp_path)
    yield setup
    if setup.proxy is not None:
        setup.proxy.stop()


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    reduced = json.loads(json.dumps(policy))
    for statement in reduced["Statement"]:
        statement["Action"] = [granted for granted in statement["Action"] if granted != action]
    return reduced


def ecr_entry(result: Result) -> dict[str, Any]:
    return registries(report_of(result))["ecr"]


def fresh_runner_copy(project: PublishProject, destination: Path) -> PublishProject:
    """The same commit in another clone, with another local image name: a CI re-run."""
    shutil.copytree(project.root, destination, ignore=shutil.ignore_patterns(".shipit"))
    return PublishProject(
        root=destination,
        image=f"{project.image}-rerun",
        ecr_repository=project.ecr_repository,
        hub_repository=project.hub_repository,
        moto=project.moto,
        ecr=project.ecr,
        hub=project.hub,
        hub_token=project.hub_token,
    )


def test_a_cold_ship_an_edit_and_moving_tags_pass_with_exactly_the_printed_policy(
    engine: Engine, enforced: Enforced
) -> None:
    enforced.grant(enforced.printed_policy())
    tags = "{sha},{sha_long},latest"
    cold = enforced.ship(SHIPIT_TAGS=tags)
    assert cold.code == 0, cold.output
    first = ecr_entry(cold)
    assert first["status"] == "pushed"
    assert [tag["status"] for tag in first["tags"]] == ["pushed", "pushed", "pushed"]
    enforced.assert_nothing_refused()

    page = enforced.project.root / "site" / "static" / "iam-edit.html"
    page.write_text("<!doctype html><title>edit</title><p>one page changed</p>\n")
    commit_all(enforced.project.root)
    edited = enforced.ship(SHIPIT_TAGS=tags)
    assert edited.code == 0, edited.output
    second = ecr_entry(edited)
    assert second["status"] == "pushed"
    assert second["digest"] != first["digest"]
    assert {tag["digest"] for tag in second["tags"]} == {second["digest"]}
    enforced.assert_nothing_refused()
    assert enforced.proxy is not None
    assert enforced.proxy.actions_seen() >= {
        "ecr:BatchGetImage",
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
    }


def test_a_fresh_runner_rerun_of_the_same_commit_keeps_the_served_digest(
    engine: Engine, enforced: Enforced, tmp_path: Path
) -> None:
    enforced.grant(enforced.printed_policy())
    first = enforced.ship()
    assert first.code == 0, first.output
    served = ecr_entry(first)

    # Built by docker build, which dates the image by the clock: the label check reads the
    # config of the image the tag holds, which the printed policy must allow.
    rerun = fresh_runner_copy(enforced.project, tmp_path / "rerun")
    try:
        again = enforced.ship(project=rerun, runner="second", SHIPIT_BUILDER="docker")
        assert again.code == 0, again.output
        entry = ecr_entry(again)
        assert report_of(again)["build"]["image_id"] != report_of(first)["build"]["image_id"]
        assert entry["status"] == "unchanged", entry
        assert entry["digest"] == served["digest"]
        assert [tag["digest"] for tag in entry["tags"]] == [tag["digest"] for tag in served["tags"]]
        assert "built from the same input" in again.stderr
    finally:
        remove_project_leftovers(rerun.image)
    enforced.assert_nothing_refused()
    assert enforced.proxy is not None
    assert "ecr:GetDownloadUrlForLayer" in enforced.proxy.actions_seen()


def test_the_engine_push_passes_with_exactly_the_printed_policy(
    engine: Engine, enforced: Enforced
) -> None:
    enforced.grant(enforced.printed_policy())
    result = enforced.ship(SHIPIT_UPLOADER="engine")
    assert result.code == 0, result.output
    assert ecr_entry(result)["status"] == "pushed"
    enforced.assert_nothing_refused()


def test_doctor_online_passes_with_exactly_the_printed_policy(enforced: Enforced) -> None:
    enforced.grant(enforced.printed_policy())
    result = enforced.project.shipit(
        "doctor", "--online", "--to", "ecr", "--json", env=enforced.env()
    )
    assert result.code == 0, result.output
    outcomes = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert outcomes["aws_credentials"]["outcome"] == "ok"
    assert outcomes["ecr_repository"]["outcome"] == "ok"
    # IAM's simulation is an extra the push policy does not grant: a warning, not a failure.
    simulation = outcomes["iam_permissions"]
    assert simulation["outcome"] == "warn", simulation
    assert "iam:SimulatePrincipalPolicy" in simulation["detail"], simulation


@pytest.mark.parametrize("uploader", ["auto", "engine"])
# ECR answers a refused HEAD without a body, so the request has to name that action.
@pytest.mark.parametrize("action", ["ecr:PutImage", "ecr:BatchCheckLayerAvailability"])
def test_a_push_without_an_action_fails_naming_it(
    engine: Engine, enforced: Enforced, uploader: str, action: str
) -> None:
    enforced.grant(without(enforced.printed_policy(), action))
    result = enforced.ship(SHIPIT_UPLOADER=uploader)
    assert result.code == ExitCode.AUTH, result.output
    error = ecr_entry(result)["error"]
    assert action in error["message"], error
    assert "shipit iam policy" in error["hint"], error
    assert enforced.proxy is not None
    assert {call.action for call in enforced.proxy.refused()} == {action}


def test_a_rerun_without_get_download_url_fails_naming_it(
    engine: Engine, enforced: Enforced, tmp_path: Path
) -> None:
    printed = enforced.printed_policy()
    enforced.grant(printed)
    assert enforced.ship().code == 0
    enforced.grant(without(printed, "ecr:GetDownloadUrlForLayer"))
    # Built by docker build, which dates the image by the clock: the label check reads the
    # config of the image the tag holds, which the printed policy must allow.
    rerun = fresh_runner_copy(enforced.project, tmp_path / "rerun")
    try:
        again = enforced.ship(project=rerun, runner="second", SHIPIT_BUILDER="docker")
    finally:
        remove_project_leftovers(rerun.image)
    assert again.code == ExitCode.AUTH, again.output
    error = ecr_entry(again)["error"]
    assert "ecr:GetDownloadUrlForLayer" in error["message"], error
    assert "shipit iam policy" in error["hint"], error


def test_an_ecr_api_call_the_policy_lacks_fails_naming_it(enforced: Enforced) -> None:
    enforced.grant(without(enforced.printed_policy(), "ecr:DescribeRepositories"))
    assert enforced.project.shipit("build", env=enforced.env()).code == 0
    result = enforced.project.shipit(
        "push", "--json", "--to", "ecr", "--skip-smoke", env=enforced.env()
    )
    assert result.code == ExitCode.AUTH, result.output
    assert "ecr:DescribeRepositories" in result.stderr
    assert "shipit iam policy" in result.stderr


def test_a_ship_of_two_platforms_and_its_rerun_pass_with_exactly_the_printed_policy(
    engine: Engine, enforced: Enforced, multi_platform_base: Any, tmp_path: Path
) -> None:
    """Each platform's manifest put by digest, the index under the tags, the base layers
    copied in from the base's registry, and a re-run reading the children: all in the policy."""
    enforced.grant(enforced.printed_policy())
    both = {
        "SHIPIT_BASE_IMAGE": multi_platform_base.reference,
        "SHIPIT_PLATFORMS": "linux/amd64,linux/arm64",
    }
    cold = enforced.ship("--to", "ecr", **both)
    assert cold.code == 0, cold.output
    assert ecr_entry(cold)["status"] == "pushed"
    enforced.assert_nothing_refused()
    # A fresh runner: the same commit and image name, no local image, an empty cache.
    remove_project_leftovers(enforced.project.image)
    rerun_project = fresh_runner_copy(enforced.project, tmp_path / "rerun")
    rerun_project.image = enforced.project.image
    again = enforced.ship("--to", "ecr", project=rerun_project, runner="second", **both)
    assert again.code == 0, again.output
    assert ecr_entry(again)["status"] == "unchanged"
    assert ecr_entry(again)["digest"] == ecr_entry(cold)["digest"]
    enforced.assert_nothing_refused()


def test_a_signed_ship_and_its_rerun_pass_with_exactly_the_printed_policy(
    engine: Engine, enforced: Enforced, tmp_path: Path
) -> None:
    from tests.test_signing_cosign import pem_key_pair

    private, _ = pem_key_pair(tmp_path)
    enforced.grant(enforced.printed_policy())
    signed = enforced.ship(SHIPIT_SIGNING_KEY=str(private))
    assert signed.code == 0, signed.output
    entry = ecr_entry(signed)
    assert entry["signatures"][0]["signed"] is True
    enforced.assert_nothing_refused()
    rerun = enforced.ship(SHIPIT_SIGNING_KEY=str(private))
    assert rerun.code == 0, rerun.output
    assert ecr_entry(rerun)["signatures"][0]["signed"] is False
    enforced.assert_nothing_refused()
