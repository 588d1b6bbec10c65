"""The registry API client against real Distribution registries (Basic, Bearer, anonymous).

The image under test is pushed by the real engine with docker-py, exactly as shipit's push
does, so "the digest the registry serves equals the digest the push reported" is checked
end to end. Faults a real registry cannot be made to produce on demand (503, 429, a HEAD
without Docker-Content-Digest, a server that never answers) come from tiny loopback
servers in this file.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker
import pytest

from harness.registry_reader import RegistryReader
from harness.services import RegistryService, free_port, registry_down
from shipit.config import LOCAL_BASE_IMAGE
from shipit.engine import Engine
from shipit.errors import AuthError, ExitCode, PushError, RegistryUnreachableError
from shipit.redact import redact
from shipit.registries.challenge import parse_challenge, parse_challenges
from shipit.registries.credentials import Credentials
from shipit.registries.errors import (
    RegistryAuthError,
    RegistryConnectionError,
    RegistryResponseError,
    is_transient,
    is_transient_status,
)
from shipit.registries.hosts import api_host
from shipit.registries.manifest import DOCKER_MANIFEST_V2, Manifest

REPOSITORY = "test/base"
TAG = "v1"
MISSING_DIGEST = "sha256:" + "0" * 64


# ---------------------------------------------------------------------------------------
# Fixtures: real registries with one image pushed by the engine
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    registry: RegistryService
    repository: str
    tag: str
    digest: str  # from the push stream's aux
    image_id: str  # the local image ID (sha256:...)
    stream: tuple[dict[str, Any], ...]

    def client(self, **kwargs: Any) -> RegistryReader:
        return RegistryReader(
            self.registry.host, self.registry.username, self.registry.password, **kwargs
        )


@pytest.fixture(scope="module")
def docker_api(engine: Engine) -> Iterator[docker.APIClient]:
    # `engine` (conftest) fails the run when the engine or base image is missing.
    client = docker.from_env(timeout=300)
    yield client.api
    client.close()


def push_base_image(
    api: docker.APIClient, registry: RegistryService, repository: str, tag: str
) -> Pushed:
    """Tag the local base image into `registry`, push it, read the stream to its end."""
    image_id: str = api.inspect_image(LOCAL_BASE_IMAGE)["Id"]  # type: ignore[no-untyped-call]
    reference = f"{registry.host}/{repository}"
    api.tag(image_id, reference, tag)
    try:
        stream = tuple(
            api.push(
                reference,
                tag=tag,
                auth_config=registry.auth_config() or None,
                stream=True,
                decode=True,
            )
        )
    finally:
        api.remove_image(f"{reference}:{tag}")
    errors = [line for line in stream if "error" in line or "errorDetail" in line]
    assert not errors, f"push to {registry} failed: {errors}"
    digests = [line["aux"]["Digest"] for line in stream if "Digest" in line.get("aux", {})]
    assert len(digests) == 1, f"expected one aux digest in the push stream, got {stream[-3:]}"
    return Pushed(registry, repository, tag, digests[0], image_id, stream)


@pytest.fixture(scope="module")
def basic_registry() -> Iterator[RegistryService]:
    with RegistryService(auth="htpasswd", password="basic-pw-0f3a9c") as registry:
        yield registry


@pytest.fixture(scope="module")
def token_registry() -> Iterator[RegistryService]:
    with RegistryService(auth="token", password="token-pw-7d21e4") as registry:
        yield registry


@pytest.fixture(scope="module")
def anonymous_registry() -> Iterator[RegistryService]:
    with RegistryService(auth="none") as registry:
        yield registry


@pytest.fixture(scope="module")
def basic_pushed(docker_api: docker.APIClient, basic_registry: RegistryService) -> Pushed:
    return push_base_image(docker_api, basic_registry, REPOSITORY, TAG)


@pytest.fixture(scope="module")
def token_pushed(docker_api: docker.APIClient, token_registry: RegistryService) -> Pushed:
    return push_base_image(docker_api, token_registry, REPOSITORY, TAG)


@pytest.fixture(params=["basic", "token"])
def pushed(request: pytest.FixtureRequest, engine: Engine) -> Pushed:
    """The same image in a Basic-auth (ECR-like) and a Bearer-auth (Docker Hub-like) registry."""
    result: Pushed = request.getfixturevalue(f"{request.param}_pushed")
    return result


# ---------------------------------------------------------------------------------------
# Against real registries
# ---------------------------------------------------------------------------------------


def test_manifest_digest_equals_the_digest_the_push_reported(pushed: Pushed) -> None:
    with pushed.client() as client:
        assert client.manifest_digest(pushed.repository, pushed.tag) == pushed.digest


def test_manifest_by_digest_resolves_to_itself(pushed: Pushed) -> None:
    with pushed.client() as client:
        assert client.manifest_digest(pushed.repository, pushed.digest) == pushed.digest


def test_config_digest_equals_the_local_image_id(pushed: Pushed) -> None:
    with pushed.client() as client:
        assert client.config_digest(pushed.repository, pushed.tag) == pushed.image_id


def test_get_manifest_returns_content_type_and_digest(pushed: Pushed) -> None:
    with pushed.client() as client:
        manifest = client.get_manifest(pushed.repository, pushed.tag)
    assert manifest.digest == pushed.digest
    assert manifest.media_type == DOCKER_MANIFEST_V2
    assert manifest.content["schemaVersion"] == 2
    assert manifest.config_digest == pushed.image_id
    assert not manifest.is_index
    assert len(manifest.content["layers"]) >= 1


def test_unknown_tag_and_repository_are_absent_not_errors(pushed: Pushed) -> None:
    with pushed.client() as client:
        assert client.manifest_digest(pushed.repository, "no-such-tag") is None
        assert client.manifest_digest("no/such-repo", pushed.tag) is None
        assert client.config_digest(pushed.repository, "no-such-tag") is None
        assert client.tags("no/such-repo") == []


def test_get_manifest_of_unknown_tag_is_a_404_push_error(pushed: Pushed) -> None:
    with pushed.client() as client, pytest.raises(RegistryResponseError) as caught:
        client.get_manifest(pushed.repository, "no-such-tag")
    assert caught.value.status == 404
    assert caught.value.exit_code == ExitCode.PUSH
    assert "no-such-tag" in caught.value.message


def test_tags_lists_the_pushed_tag(pushed: Pushed) -> None:
    with pushed.client() as client:
        assert client.tags(pushed.repository) == [pushed.tag]


def test_blob_exists_for_config_and_layers_only(pushed: Pushed) -> None:
    with pushed.client() as client:
        manifest = client.get_manifest(pushed.repository, pushed.tag)
        assert client.blob_exists(pushed.repository, pushed.image_id)
        for layer in manifest.content["layers"]:
            assert client.blob_exists(pushed.repository, layer["digest"])
        assert not client.blob_exists(pushed.repository, MISSING_DIGEST)


def test_good_credentials_ping_and_read_what_no_credentials_may_not(pushed: Pushed) -> None:
    with pushed.client() as client:
        client.ping()
        assert client.manifest_digest(pushed.repository, pushed.tag) == pushed.digest
    with RegistryReader(pushed.registry.host) as anonymous, pytest.raises(AuthError):
        anonymous.manifest_digest(pushed.repository, pushed.tag)


@pytest.mark.parametrize("registry_fixture", ["basic_registry", "token_registry"])
def test_wrong_password_is_an_auth_error_without_the_password(
    request: pytest.FixtureRequest, registry_fixture: str
) -> None:
    registry: RegistryService = request.getfixturevalue(registry_fixture)
    wrong = "wrong-Pa55word-91b7"
    client = RegistryReader(registry.host, registry.username, wrong)
    with pytest.raises(AuthError) as caught:
        client.manifest_digest(REPOSITORY, TAG)
    error = caught.value
    assert error.exit_code == ExitCode.AUTH
    assert f"registry {registry.host} refused the credentials for user 'shipit'" in error.message
    assert "(401)" in error.message
    assert "DOCKERHUB_TOKEN" in error.hint
    for text in (str(error), error.one_line(), repr(error), error.hint, repr(client)):
        assert wrong not in text
    assert "\n" not in error.one_line()
    # ping() proves the credentials too (Docker Hub lets anyone fetch a scope-less token,
    # so for Bearer it is the token service that refuses).
    with pytest.raises(AuthError):
        client.ping()


@pytest.mark.parametrize("registry_fixture", ["basic_registry", "token_registry"])
def test_missing_credentials_say_so(request: pytest.FixtureRequest, registry_fixture: str) -> None:
    registry: RegistryService = request.getfixturevalue(registry_fixture)
    with pytest.raises(AuthError, match="requires credentials and none were given"):
        RegistryReader(registry.host).manifest_digest(REPOSITORY, TAG)


def test_custom_auth_hint_is_used(basic_registry: RegistryService) -> None:
    client = RegistryReader(basic_registry.host, "shipit", "nope-nope", auth_hint="renew it")
    with pytest.raises(AuthError) as caught:
        client.ping()
    assert caught.value.hint == "renew it"


def test_bearer_token_is_fetched_once_per_scope(token_pushed: Pushed) -> None:
    tokens = token_pushed.registry.token_service
    assert tokens is not None
    before = len(tokens.requests)
    with token_pushed.client() as client:
        client.manifest_digest(REPOSITORY, TAG)
        client.config_digest(REPOSITORY, TAG)
        client.tags(REPOSITORY)
        client.blob_exists(REPOSITORY, token_pushed.image_id)
        client.manifest_digest("other/repo", TAG)
    asked = tokens.requests[before:]
    assert [request.scopes for request in asked] == [
        (f"repository:{REPOSITORY}:pull",),
        ("repository:other/repo:pull",),
    ]
    assert all(request.account == "shipit" and request.authenticated for request in asked)
    assert all(request.service == tokens.service for request in asked)


def test_bearer_token_never_shows(token_pushed: Pushed) -> None:
    with token_pushed.client() as client:
        client.manifest_digest(REPOSITORY, TAG)
        tokens = list(client._tokens.values())
        assert tokens, "the client should hold a token after a Bearer round trip"
        for token in tokens:
            assert token.value not in repr(client)
            assert token.value not in str(vars(client).get("_challenge"))
            # Registered the moment it was read, so the CLI's redaction masks it anywhere.
            assert redact(f"Authorization: Bearer {token.value}") == "Authorization: Bearer ***"


def test_anonymous_registry_needs_no_credentials(anonymous_registry: RegistryService) -> None:
    with RegistryReader(anonymous_registry.host) as client:
        client.ping()
        assert client.manifest_digest(REPOSITORY, TAG) is None
        assert client.tags(REPOSITORY) == []


def test_stopped_registry_is_unreachable_and_back_after_restart(
    basic_pushed: Pushed,
) -> None:
    registry = basic_pushed.registry
    client = basic_pushed.client(timeout=5)
    with registry_down(registry):
        with pytest.raises(RegistryUnreachableError) as caught:
            client.manifest_digest(REPOSITORY, TAG)
        error = caught.value
        assert isinstance(error, RegistryConnectionError)
        assert error.exit_code == ExitCode.REGISTRY_UNREACHABLE
        assert error.message == f"cannot reach registry {registry.host}: connection refused"
        assert "running" in error.hint
        assert is_transient(error)
    # Same port, same storage: the image survived the restart.
    assert client.manifest_digest(REPOSITORY, TAG) == basic_pushed.digest


def test_unresolvable_host_is_unreachable_and_not_transient() -> None:
    client = RegistryReader("registry.shipit-test.invalid", "u", "p", timeout=10)
    with pytest.raises(RegistryUnreachableError) as caught:
        client.ping()
    assert "registry.shipit-test.invalid" in caught.value.message
    assert "host name not found" in caught.value.message
    assert not is_transient(caught.value)


def test_silent_server_times_out_as_transient() -> None:
    # A listening socket that never accepts: the TCP handshake completes (backlog) and
    # then nothing is ever said, which is what a hung registry looks like.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        client = RegistryReader(host, "u", "p", timeout=0.5)
        with pytest.raises(RegistryUnreachableError) as caught:
            client.ping()
    assert caught.value.message == f"cannot reach registry {host}: no answer within 0.5 s"
    assert is_transient(caught.value)


# -- put_manifest: pointing a tag at a manifest the registry serves ----------------------

MOVED_REPOSITORY = "test/moved"


@pytest.fixture(scope="module")
def basic_moved(docker_api: docker.APIClient, basic_registry: RegistryService) -> Pushed:
    return push_base_image(docker_api, basic_registry, MOVED_REPOSITORY, TAG)


@pytest.fixture(scope="module")
def token_moved(docker_api: docker.APIClient, token_registry: RegistryService) -> Pushed:
    return push_base_image(docker_api, token_registry, MOVED_REPOSITORY, TAG)


@pytest.fixture(params=["basic", "token"])
def moved(request: pytest.FixtureRequest, engine: Engine) -> Pushed:
    """An image of its own repository, whose tags the put_manifest tests may move."""
    result: Pushed = request.getfixturevalue(f"{request.param}_moved")
    return result


def test_manifest_keeps_the_exact_bytes_served(moved: Pushed) -> None:
    with moved.client() as client:
        manifest = client.get_manifest(moved.repository, moved.tag)
    assert manifest.raw
    assert manifest.raw_digest == manifest.digest == moved.digest
    assert json.loads(manifest.raw) == manifest.content


def test_put_manifest_points_a_tag_at_the_same_digest(moved: Pushed) -> None:
    with moved.client() as client:
        manifest = client.get_manifest(moved.repository, moved.tag)
        answered = client.put_manifest(moved.repository, "latest", manifest)
        assert answered == moved.digest
        assert client.manifest_digest(moved.repository, "latest") == moved.digest
        assert client.get_manifest(moved.repository, "latest").raw == manifest.raw
        assert sorted(client.tags(moved.repository)) == ["latest", TAG]


def test_put_manifest_asks_for_push_access_once(token_moved: Pushed) -> None:
    tokens = token_moved.registry.token_service
    assert tokens is not None
    with token_moved.client() as client:
        manifest = client.get_manifest(MOVED_REPOSITORY, TAG)
        before = len(tokens.requests)
        client.put_manifest(MOVED_REPOSITORY, "again-1", manifest)
        client.put_manifest(MOVED_REPOSITORY, "again-2", manifest)
    asked = tokens.requests[before:]
    # The registry's challenge names the actions in no fixed order (Distribution lists them
    # from a Go map): one token request, for push and pull, is what counts.
    assert len(asked) == 1
    ((scope,),) = [request.scopes for request in asked]
    resource, _, actions = scope.rpartition(":")
    assert resource == f"repository:{MOVED_REPOSITORY}"
    assert sorted(actions.split(",")) == ["pull", "push"]


def test_put_manifest_of_missing_blobs_is_a_lasting_manifest_error(moved: Pushed) -> None:
    content = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": MISSING_DIGEST,
            "size": 2,
        },
        "layers": [],
    }
    raw = json.dumps(content).encode()
    broken = Manifest(digest="", media_type=DOCKER_MANIFEST_V2, content=content, raw=raw)
    with moved.client() as client, pytest.raises(RegistryResponseError) as caught:
        client.put_manifest(moved.repository, "broken", broken)
    error = caught.value
    assert error.status == 400
    assert error.code.startswith("MANIFEST_")
    assert not error.transient
    assert error.exit_code == ExitCode.PUSH
    assert f"PUT /v2/{moved.repository}/manifests/broken" in error.message
    assert "\n" not in error.one_line()


def test_put_manifest_needs_the_served_bytes(moved: Pushed) -> None:
    parsed_only = Manifest(digest=moved.digest, media_type=DOCKER_MANIFEST_V2, content={})
    with moved.client() as client, pytest.raises(ValueError, match="bytes"):
        client.put_manifest(moved.repository, "latest", parsed_only)


@pytest.mark.parametrize("registry_fixture", ["basic_registry", "token_registry"])
def test_use_credentials_replaces_refused_ones(
    request: pytest.FixtureRequest, registry_fixture: str
) -> None:
    registry: RegistryService = request.getfixturevalue(registry_fixture)
    wrong = "old-Pa55word-expired"
    with RegistryReader(registry.host, registry.username, wrong) as client:
        with pytest.raises(RegistryAuthError) as caught:
            client.tags(REPOSITORY)
        assert caught.value.status == 401
        client.use_credentials(Credentials(registry.username, registry.password))
        client.tags(REPOSITORY)  # the same client, now with the renewed credentials
        assert wrong not in repr(client)


# ---------------------------------------------------------------------------------------
# Against scripted loopback servers: answers a real registry gives only when failing
# ---------------------------------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class ScriptedServer:
    host: str
    seen: list[tuple[str, str, str | None]]  # method, path, Authorization


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str, str], Reply]], ScriptedServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str, str], Reply]) -> ScriptedServer:
        seen: list[tuple[str, str, str | None]] = []

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, body = answer(self.command, self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _reply

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        # The constructor has bound and listened already: no readiness wait is needed.
        return ScriptedServer(f"127.0.0.1:{server.server_address[1]}", seen)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _errors(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [(503, "UNAVAILABLE", True), (429, "TOOMANYREQUESTS", True), (400, "MANIFEST_INVALID", False)],
)
def test_error_status_carries_the_registry_error_code(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
    status: int,
    code: str,
    transient: bool,
) -> None:
    server = scripted(lambda method, path: (status, JSON, _errors(code, "it went\nwrong")))
    with pytest.raises(RegistryResponseError) as caught:
        RegistryReader(server.host, "u", "p").tags(REPOSITORY)
    error = caught.value
    assert isinstance(error, PushError)
    assert (error.status, error.code, error.transient) == (status, code, transient)
    assert is_transient(error) is transient
    assert error.message == (
        f"registry {server.host} answered {status} to GET /v2/{REPOSITORY}/tags/list "
        f"({code}: it went wrong)"
    )


def test_refusal_keeps_the_registry_words_apart_from_the_message(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
) -> None:
    # What ECR answers once its 12-hour token has run out.
    words = "Your authorization token has expired. Reauthenticate and try again."
    server = scripted(lambda method, path: (403, JSON, _errors("DENIED", words)))
    with pytest.raises(RegistryAuthError) as caught:
        RegistryReader(server.host, "AWS", "stale-token").get_manifest(REPOSITORY, TAG)
    error = caught.value
    assert isinstance(error, AuthError)
    assert error.status == 403
    assert error.registry_message == words
    assert error.message == f"registry {server.host} denied access to user 'AWS' (403)"


def test_head_without_digest_header_falls_back_to_hashing_the_body(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
) -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": "sha256:" + "c" * 64,
                "size": 1,
            },
            "layers": [],
        }
    ).encode()
    headers = {"Content-Type": DOCKER_MANIFEST_V2}
    server = scripted(lambda method, path: (200, headers, body))
    expected = "sha256:" + hashlib.sha256(body).hexdigest()
    client = RegistryReader(server.host)
    assert client.manifest_digest(REPOSITORY, TAG) == expected
    assert [(method, path) for method, path, _ in server.seen] == [
        ("HEAD", f"/v2/{REPOSITORY}/manifests/{TAG}"),
        ("GET", f"/v2/{REPOSITORY}/manifests/{TAG}"),
    ]


def test_name_unknown_body_means_absent(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
) -> None:
    # Some registries answer an unknown repository with an error body, not a bare 404.
    server = scripted(lambda method, path: (404, JSON, _errors("NAME_UNKNOWN", "no repo")))
    client = RegistryReader(server.host)
    assert client.config_digest("no/repo", TAG) is None
    assert client.tags("no/repo") == []


def test_basic_credentials_are_sent_up_front_after_the_first_challenge(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
) -> None:
    def answer(method: str, path: str) -> Reply:
        authorized = server.seen[-1][2] is not None
        if not authorized:
            return (
                401,
                {"WWW-Authenticate": 'Basic realm="x"', **JSON},
                _errors("UNAUTHORIZED", "authentication required"),
            )
        return 200, JSON, b'{"name": "test/base", "tags": ["a"]}'

    server = scripted(answer)
    client = RegistryReader(server.host, "AWS", "ecr-token-value")
    assert client.tags(REPOSITORY) == ["a"]
    assert client.tags(REPOSITORY) == ["a"]
    assert [auth is not None for _, _, auth in server.seen] == [False, True, True]


def test_tags_follow_pagination_links(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
) -> None:
    def answer(method: str, path: str) -> Reply:
        if "last=" not in path:
            link = {"Link": f'</v2/{REPOSITORY}/tags/list?n=1&last=a>; rel="next"'}
            return 200, {**JSON, **link}, b'{"tags": ["a"]}'
        return 200, JSON, b'{"tags": ["b"]}'

    server = scripted(answer)
    assert RegistryReader(server.host).tags(REPOSITORY) == ["a", "b"]


# ---------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------


def test_parse_docker_hub_bearer_challenge() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:acme/site:pull,push",error="insufficient_scope"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.param("service") == "registry.docker.io"
    assert challenge.scope == "repository:acme/site:pull,push"
    assert challenge.param("error") == "insufficient_scope"


def test_parse_challenges_quoting_case_and_several_schemes() -> None:
    parsed = parse_challenges(
        'BASIC realm="say \\"hi\\", please", charset=UTF-8, '
        "Bearer realm=https://t.example/token,service=reg"
    )
    assert [c.scheme for c in parsed] == ["basic", "bearer"]
    assert dict(parsed[0].params) == {"realm": 'say "hi", please', "charset": "UTF-8"}
    assert parsed[1].realm == "https://t.example/token"
    assert parsed[1].param("service") == "reg"
    # Bearer wins when both are offered: it does not send the password to every request.
    chosen = parse_challenge('Basic realm="r", Bearer realm="https://t/x"')
    assert chosen is not None and chosen.scheme == "bearer"


@pytest.mark.parametrize("header", ["", "   ", ",,,"])
def test_parse_challenge_of_nothing_is_none(header: str) -> None:
    assert parse_challenge(header) is None


def test_ecr_basic_challenge() -> None:
    challenge = parse_challenge(
        'Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",'
        'service="ecr.amazonaws.com"'
    )
    assert challenge is not None and challenge.scheme == "basic"
    assert challenge.param("service") == "ecr.amazonaws.com"


@pytest.mark.parametrize(
    ("host", "api"),
    [
        ("127.0.0.1:5001", "127.0.0.1:5001"),
        ("localhost:5000", "localhost:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ("docker.io", "registry-1.docker.io"),
        ("index.docker.io", "registry-1.docker.io"),
        ("https://docker.io/", "registry-1.docker.io"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com", None),
        ("localhost.example.com", None),
    ],
)
def test_api_host(host: str, api: str | None) -> None:
    # Which scheme each host gets is the engine's rule: tests/test_transport.py.
    assert api_host(host) == (api or host)
    assert RegistryReader(host).host == (api or host)


def test_docker_hub_official_images_live_under_library(
    scripted: Callable[[Callable[[str, str], Reply]], ScriptedServer],
) -> None:
    # Only the real Docker Hub gets the library/ prefix; a scripted host stays as asked.
    hub = RegistryReader("docker.io")
    assert hub._repository("nginx") == "library/nginx"
    assert hub._repository("acme/site") == "acme/site"
    server = scripted(lambda method, path: (404, JSON, b"{}"))
    RegistryReader(server.host).manifest_digest("nginx", TAG)
    assert server.seen[0][1] == f"/v2/nginx/manifests/{TAG}"


def test_repr_hides_password() -> None:
    client = RegistryReader("127.0.0.1:5001", "shipit", "hunter2-secret-pw")
    text = repr(client)
    assert "hunter2-secret-pw" not in text
    assert "password='***'" in text
    assert "username='shipit'" in text
    assert "password=None" in repr(RegistryReader("127.0.0.1:5001"))


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (200, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_is_transient_status(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient
