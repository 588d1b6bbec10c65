"""Moving `latest`: one manifest PUT of the sha tag's exact bytes, no second engine push.

Real Distribution registries (and moto for ECR's API) behind a proxy per registry that counts
every request shipit and the engine make, and that can answer the PUT of `latest` itself the
way a refusing registry would (ECR's immutable tags, a missing IAM permission, an expired
token), which a Distribution registry cannot be made to do.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from harness.faultproxy import FaultProxy
from harness.registry_reader import RegistryReader
from harness.services import RegistryService, moto_ecr_password
from shipit.errors import ExitCode
from shipit.registries.distribution import RegistryClient
from tests.conftest import HUB_USER, PublishProject, Result

pytestmark = pytest.mark.engine

WRITES = ("PUT", "POST", "PATCH", "DELETE")
ECR_IMMUTABLE = (
    "The image tag 'latest' already exists in the '{repository}' repository and cannot be "
    "overwritten because the tag is immutable."
)
ECR_DENIED = (
    "User: arn:aws:sts::123456789012:assumed-role/ci/shipit is not authorized to perform: "
    "ecr:PutImage on resource: arn:aws:ecr:us-east-1:123456789012:repository/{repository} "
    "because no identity-based policy allows the ecr:PutImage action"
)
ECR_EXPIRED = "Your authorization token has expired. Reauthenticate and try again."


class RefusingProxy(FaultProxy):
    """A FaultProxy that can also answer the requests a pattern matches itself, with a
    registry error body, as a registry refusing them would."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__("127.0.0.1", upstream_port)
        self._refusal: tuple[re.Pattern[str], int, bytes] | None = None
        self._refusals_left = 0
        self._refusal_lock = threading.Lock()
        self.refused: list[str] = []

    def refuse(self, match: str, status: int, code: str, message: str, count: int = 100) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        with self._refusal_lock:
            self._refusal = (re.compile(match), status, body)
            self._refusals_left = count

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        request = f"{handler.command} {handler.path}"
        with self._refusal_lock:
            refusal = self._refusal
            if refusal is None or self._refusals_left <= 0 or not refusal[0].search(request):
                refusal = None
            else:
                self._refusals_left -= 1
                self.refused.append(request)
        if refusal is None:
            super().handle(handler)
            return
        _, status, body = refusal
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        handler.wfile.flush()

    def requests(self, since: int = 0) -> list[str]:
        """ "METHOD path" of every request that reached the registry, from position `since`."""
        return [f"{seen.method} {seen.path}" for seen in self.seen()[since:]]


@dataclass
class Registry:
    """One registry as the test sees it: its proxy, and the registry itself behind it."""

    name: str
    proxy: RefusingProxy
    service: RegistryService
    user: str
    password: str
    repository: str

    def client(self) -> RegistryClient:
        """The registry itself, not the proxy: these requests are not counted."""
        return RegistryReader(self.service.host, self.user, self.password)

    def writes(self, since: int = 0) -> list[str]:
        return [r for r in self.proxy.requests(since) if r.startswith(WRITES)]

    def manifest_puts(self, since: int = 0) -> list[str]:
        return [r for r in self.proxy.requests(since) if re.match(r"PUT /v2/.*/manifests/", r)]


@dataclass
class Pushing:
    project: PublishProject
    base: str
    ecr: Registry
    hub: Registry

    def env(self, **extra: str) -> dict[str, str]:
        return self.project.env(
            SHIPIT_BASE_IMAGE=self.base,
            SHIPIT_ECR_REGISTRY=self.ecr.proxy.host,
            SHIPIT_DOCKERHUB_REGISTRY=self.hub.proxy.host,
            **extra,
        )

    def build(self, **extra: str) -> dict[str, Any]:
        """A build of new content: a new sha tag, and a new layer for every registry."""
        with self.project.site_toml.open("a") as data:
            data.write(f'\nnonce_{uuid.uuid4().hex} = "new content"\n')
        built = self.project.shipit("build", "--json", env=self.env(**extra))
        assert built.code == 0, built.output
        document = json.loads(built.stdout)
        assert isinstance(document, dict)
        return document

    def push(self, *args: str, **extra: str) -> Result:
        return self.project.shipit("push", "--skip-smoke", "--json", *args, env=self.env(**extra))


@pytest.fixture
def pushing(publish_project: PublishProject, tiny_base: str) -> Iterator[Pushing]:
    project = publish_project
    assert project.ecr and project.hub
    ecr = Registry(
        "ecr",
        RefusingProxy(project.ecr.port).start(),
        project.ecr,
        "AWS",
        moto_ecr_password(),
        project.ecr_repository,
    )
    hub = Registry(
        "dockerhub",
        RefusingProxy(project.hub.port).start(),
        project.hub,
        HUB_USER,
        project.hub_token,
        project.hub_repository,
    )
    try:
        yield Pushing(project, tiny_base, ecr, hub)
    finally:
        ecr.proxy.stop()
        hub.proxy.stop()


def report_of(result: Result) -> dict[str, dict[str, Any]]:
    """The push report's registries by name (an error line may follow the document)."""
    document, _ = json.JSONDecoder().raw_decode(result.stdout.lstrip())
    return {entry["registry"]: entry for entry in document["registries"]}


def tag_statuses(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(tag["tag"], tag["status"]) for tag in entry["tags"]]


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("shipit: error: ")]


# -- the push ------------------------------------------------------------------------------


def test_latest_is_one_manifest_put_of_the_sha_tags_bytes(pushing: Pushing) -> None:
    built = pushing.build()
    result = pushing.push()
    assert result.code == 0, result.output
    by_name = report_of(result)
    for registry in (pushing.ecr, pushing.hub):
        entry = by_name[registry.name]
        sha_tag, latest = entry["tags"]
        assert tag_statuses(entry) == [(sha_tag["tag"], "pushed"), ("latest", "pushed")]
        assert latest["digest"] == sha_tag["digest"] == entry["digest"]
        repository = registry.repository
        # The engine pushed once (one /v2/ ping, one manifest); shipit PUT `latest` itself.
        assert registry.manifest_puts() == [
            f"PUT /v2/{repository}/manifests/{sha_tag['tag']}",
            f"PUT /v2/{repository}/manifests/latest",
        ]
        # The classic store's engine pings /v2/ once; the containerd store's does not.
        assert registry.proxy.requests().count("GET /v2/") <= 1
        with registry.client() as client:
            served_sha = client.get_manifest(repository, sha_tag["tag"])
            served_latest = client.get_manifest(repository, "latest")
        assert served_latest.raw == served_sha.raw
        assert served_latest.digest == entry["digest"]
        assert served_latest.media_type == served_sha.media_type
        assert built["image_id"] in (served_latest.config_digest, served_latest.digest)


def test_no_change_push_writes_nothing_and_asks_three_times(pushing: Pushing) -> None:
    pushing.build()
    first = pushing.push()
    assert first.code == 0, first.output
    marks = {r.name: len(r.proxy.seen()) for r in (pushing.ecr, pushing.hub)}

    again = pushing.push()
    assert again.code == 0, again.output
    by_name = report_of(again)
    for registry in (pushing.ecr, pushing.hub):
        entry = by_name[registry.name]
        assert entry["status"] == "unchanged"
        assert entry["bytes_uploaded"] == 0
        assert [tag["status"] for tag in entry["tags"]] == ["unchanged", "unchanged"]
        asked = registry.proxy.requests(marks[registry.name])
        assert registry.writes(marks[registry.name]) == []
        # The sha tag (its auth challenge, then the answer) and `latest`, by one client.
        assert len(asked) <= 3, asked
        assert all(request.startswith("GET /v2/") for request in asked), asked


def test_latest_elsewhere_is_moved_without_pushing_again(pushing: Pushing) -> None:
    hub = pushing.hub
    pushing.build()
    older = pushing.push()
    assert older.code == 0, older.output
    older_sha_tag = report_of(older)["dockerhub"]["tags"][0]["tag"]
    pushing.build()
    newer = pushing.push()
    assert newer.code == 0, newer.output
    digest = report_of(newer)["dockerhub"]["digest"]
    # Someone points Docker Hub's `latest` back at the older image.
    with hub.client() as client:
        older_manifest = client.get_manifest(hub.repository, older_sha_tag)
        assert client.put_manifest(hub.repository, "latest", older_manifest) != digest
    mark = len(hub.proxy.seen())

    result = pushing.push()
    assert result.code == 0, result.output
    by_name = report_of(result)
    assert [tag["status"] for tag in by_name["ecr"]["tags"]] == ["unchanged", "unchanged"]
    entry = by_name["dockerhub"]
    assert [tag["status"] for tag in entry["tags"]] == ["unchanged", "pushed"]
    assert entry["status"] == "pushed" and entry["bytes_uploaded"] == 0
    assert hub.writes(mark) == [f"PUT /v2/{hub.repository}/manifests/latest"]
    assert "GET /v2/" not in hub.proxy.requests(mark)  # no engine push
    with hub.client() as client:
        assert client.manifest_digest(hub.repository, "latest") == digest


# -- refusals, faults and an expired token on the PUT of `latest` ------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "exit_code", "error_class", "says"),
    [
        (400, "TAG_INVALID", ECR_IMMUTABLE, ExitCode.PUSH, "TagConflictError", "immutable"),
        (
            400,
            "MANIFEST_INVALID",
            "manifest invalid",
            ExitCode.PUSH,
            "RegistryResponseError",
            "MANIFEST_INVALID",
        ),
        (403, "DENIED", ECR_DENIED, ExitCode.AUTH, "AuthError", "missing ecr:PutImage"),
    ],
    ids=["immutable", "manifest-invalid", "denied"],
)
def test_a_refused_latest_fails_at_once_with_one_clear_line(
    pushing: Pushing,
    status: int,
    code: str,
    message: str,
    exit_code: ExitCode,
    error_class: str,
    says: str,
) -> None:
    ecr = pushing.ecr
    pushing.build()
    ecr.proxy.refuse(
        r"^PUT /v2/.*/manifests/latest$",
        status,
        code,
        message.format(repository=ecr.repository),
    )
    result = pushing.push("--to", "ecr")

    assert result.code == exit_code, result.output
    entry = report_of(result)["ecr"]
    sha_tag = entry["tags"][0]["tag"]
    assert tag_statuses(entry) == [(sha_tag, "pushed"), ("latest", "failed")]
    assert entry["error"]["class"] == error_class
    assert entry["error"]["exit_code"] == exit_code
    [line] = error_lines(result)
    assert line == result.stderr.strip().splitlines()[-1]
    assert line.startswith("shipit: error: push failed for ecr: ")
    assert ecr.proxy.host in line
    assert says in line
    # Refused at once: one PUT, no retry.
    assert len(ecr.proxy.refused) == 1
    assert "attempt 1 failed" not in result.stderr
    with ecr.client() as client:
        assert client.manifest_digest(ecr.repository, sha_tag) == entry["digest"]
        assert client.manifest_digest(ecr.repository, "latest") is None


def test_immutable_latest_hint_names_the_setting(pushing: Pushing) -> None:
    pushing.build()
    message = ECR_IMMUTABLE.format(repository=pushing.hub.repository)
    pushing.hub.proxy.refuse(r"^PUT /v2/.*/manifests/latest$", 400, "TAG_INVALID", message)
    result = pushing.push("--to", "dockerhub")
    assert result.code == ExitCode.PUSH, result.output
    [line] = error_lines(result)
    assert f"{pushing.hub.proxy.host}/{pushing.hub.repository}:latest cannot be moved" in line
    assert "dockerhub_tag_mutability" in line


def test_an_expired_token_on_the_latest_put_is_renewed(pushing: Pushing) -> None:
    ecr = pushing.ecr
    pushing.build()
    ecr.proxy.refuse(r"^PUT /v2/.*/manifests/latest$", 403, "DENIED", ECR_EXPIRED, count=1)
    result = pushing.push("--to", "ecr")
    assert result.code == 0, result.output
    assert "ecr: token expired; fetching a fresh one" in result.stderr
    entry = report_of(result)["ecr"]
    assert [tag["status"] for tag in entry["tags"]] == ["pushed", "pushed"]
    assert len(ecr.proxy.refused) == 1
    with ecr.client() as client:
        assert client.manifest_digest(ecr.repository, "latest") == entry["digest"]


def test_a_503_on_the_latest_put_is_retried(pushing: Pushing) -> None:
    hub = pushing.hub
    pushing.build()
    hub.proxy.set_mode("503", count=1, match=r"^PUT /v2/.*/manifests/latest$")
    result = pushing.push("--to", "dockerhub")
    assert result.code == 0, result.output
    assert hub.proxy.faults_injected == 1
    assert "dockerhub: attempt 1 failed" in result.stderr
    entry = report_of(result)["dockerhub"]
    assert [(tag["status"], tag["attempts"]) for tag in entry["tags"]] == [
        ("pushed", 1),
        ("pushed", 2),
    ]
    with hub.client() as client:
        assert client.manifest_digest(hub.repository, "latest") == entry["digest"]


def test_known_immutable_repository_holds_latest_back_without_a_put(pushing: Pushing) -> None:
    ecr = pushing.ecr
    immutable = {"SHIPIT_ECR_TAG_MUTABILITY": "IMMUTABLE"}
    pushing.build(**immutable)
    first = pushing.push("--to", "ecr", **immutable)
    assert first.code == 0, first.output
    first_digest = report_of(first)["ecr"]["digest"]

    pushing.build(**immutable)
    mark = len(ecr.proxy.seen())
    second = pushing.push("--to", "ecr", **immutable)
    assert second.code == 0, second.output
    entry = report_of(second)["ecr"]
    sha_tag = entry["tags"][0]["tag"]
    assert tag_statuses(entry) == [(sha_tag, "pushed"), ("latest", "held-back")]
    assert any(note.startswith("latest not moved:") for note in entry["notes"])
    assert f"PUT /v2/{ecr.repository}/manifests/latest" not in ecr.manifest_puts(mark)
    with ecr.client() as client:
        assert client.manifest_digest(ecr.repository, "latest") == first_digest
