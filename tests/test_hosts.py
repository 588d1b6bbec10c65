"""Where shipit's registry client sends credentials, and how it waits when a registry asks.

Real registries send a push to other hosts: Docker Hub and GHCR answer blob reads with a 307
to a CDN, ECR and S3-backed registries answer upload steps with a `Location` on another host
(a presigned URL). Neither may receive the registry's credentials; docker sends them none.
Rate-limited registries answer 429 with `Retry-After`, which a retry must honour (up to
RETRY_AFTER_CAP_SECONDS). The fault proxy (harness/faultproxy.py) plays all of these in front
of a real Distribution registry; its CDN and upload host record every Authorization header
they are sent.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from tenacity import RetryCallState, Retrying

from harness.faultproxy import FaultProxy, Seen
from harness.loopback import HttpService
from harness.services import RegistryService
from harness.targets import oci_registry, target_of
from shipit.errors import ExitCode, PushError
from shipit.push.retry import (
    RETRY_AFTER_CAP_SECONDS,
    WaitForRegistry,
    retry_line,
    too_long_to_wait,
)
from shipit.push.targets import Target
from shipit.registries.credentials import Credentials
from shipit.registries.diagnosis import describe_rate_limit, parse_retry_after
from shipit.registries.distribution import RegistryClient
from shipit.registries.errors import RegistryResponseError
from shipit.registries.hosts import same_origin
from tests import test_faults
from tests.conftest import Result, remove_project_leftovers, wait_for_the_next_second
from tests.leftovers import shipit_uploads
from tests.reliability import Recorder
from tests.test_blobs import uploaded_layers
from tests.test_faults import PushScenario, error_line, registries, report_of
from tests.test_publish import commit_all

# test_faults's pushes through a proxy of their own, to Docker Hub's and ECR's stand-ins.
scenario = test_faults.scenario
ecr_scenario = test_faults.ecr_scenario

REPOSITORY = "hosts/blobs"
MANIFESTS = r"^(GET|HEAD) /v2/.*/manifests/"


# -- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "other", "same"),
    [
        ("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/x/blobs/uploads/1?a=b", True),
        ("https://registry.example", "https://REGISTRY.example:443/v2/", True),
        ("http://registry.example/v2/", "http://registry.example:80/", True),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/v2/", False),  # another port
        ("https://registry.example", "http://registry.example/", False),  # plain http
        ("https://registry.example", "https://cdn.registry.example/", False),  # a subdomain
        ("https://registry.example", "https://registry.example.evil/", False),
        ("http://[::1]:5000/v2/", "http://[::1]:5000/v2/x", True),
        ("http://[::1]:5000/v2/", "http://127.0.0.1:5000/v2/x", False),
    ],
)
def test_credentials_go_to_the_same_scheme_host_and_port_only(
    url: str, other: str, same: bool
) -> None:
    assert same_origin(url, other) is same
    assert same_origin(other, url) is same


NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Thu, 03 Dec 2026 12:00:30 GMT", 30.0),  # an HTTP-date, 30 s from now
        ("Thursday, 03-Dec-26 12:01:00 GMT", 60.0),  # RFC 850, which RFC 9110 still allows
        ("Thu, 03 Dec 2026 11:00:00 GMT", 0.0),  # in the past: no wait
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_docker_hubs_rate_limit_headers_in_words() -> None:
    assert describe_rate_limit("100;w=21600", "0;w=21600") == "100 requests per 6 h, 0 left"
    assert describe_rate_limit("200;w=60", "") == "200 requests per 1 min"
    assert describe_rate_limit("5000", "4999") == "5000 requests, 4999 left"
    assert describe_rate_limit("", "0;w=21600") == ""


def _failed_attempt(error: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def _rate_limited(retry_after: float | None, status: int = 429) -> RegistryResponseError:
    return RegistryResponseError(
        f"registry r answered {status} to GET /v2/x/manifests/latest",
        status=status,
        retry_after=retry_after,
        rate_limit="100 requests per 6 h, 0 left",
    )


def test_the_wait_is_the_longer_of_the_backoff_and_retry_after() -> None:
    wait = WaitForRegistry()
    backoffs = [wait(_failed_attempt(_rate_limited(None))) for _ in range(20)]
    assert max(backoffs) < 2  # the first backoff, without a Retry-After
    assert min(wait(_failed_attempt(_rate_limited(2))) for _ in range(20)) >= 2
    assert min(wait(_failed_attempt(_rate_limited(30, status=503))) for _ in range(5)) >= 30
    # A Retry-After of 0 leaves the backoff as it is.
    assert max(wait(_failed_attempt(_rate_limited(0))) for _ in range(20)) < 2
    # A 400 is not retried, so what it says about waiting does not count.
    refused = RegistryResponseError("bad", status=400, retry_after=30)
    assert max(wait(_failed_attempt(refused)) for _ in range(20)) < 2


def _target() -> Target:
    return target_of(oci_registry(), "registry.example", "team/site")


def test_a_retry_after_beyond_the_cap_is_one_error_saying_when_to_push_again() -> None:
    target = _target()
    assert too_long_to_wait(_rate_limited(RETRY_AFTER_CAP_SECONDS), target) is None
    error = too_long_to_wait(_rate_limited(3600), target)
    assert error is not None
    line = error.one_line()
    assert "\n" not in line
    assert "asked to wait 3600 s (Retry-After)" in line
    assert "its rate limit: 100 requests per 6 h, 0 left" in line
    assert f"longer than shipit waits ({RETRY_AFTER_CAP_SECONDS:g} s)" in line
    assert re.search(r"push again after \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", line), line
    assert error.exit_code == ExitCode.PUSH


def test_the_progress_line_names_the_wait_the_registry_asked_for() -> None:
    target = _target()
    line = retry_line(target, _failed_attempt(_rate_limited(30)))
    assert line.endswith("registry asked to wait 30 s (Retry-After); retrying")
    plain = retry_line(target, _failed_attempt(_rate_limited(None)))
    assert plain.startswith("dockerhub: attempt 1 failed (registry r answered 429")
    assert plain.endswith("); retrying")


# -- the client against a real registry, through the proxy's other hosts ----------------


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryService]:
    with RegistryService(username="AWS", password="ecr-" + secrets.token_urlsafe(16)) as made:
        yield made


@pytest.fixture
def proxy(registry: RegistryService) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", registry.port) as made:
        yield made


def client_of(proxy: FaultProxy, registry: RegistryService) -> RegistryClient:
    return RegistryClient(proxy.host, Credentials(registry.username, registry.password))


def basic(registry: RegistryService) -> str:
    raw = f"{registry.username}:{registry.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def upload(client: RegistryClient, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.upload_blob(REPOSITORY, digest, io.BytesIO(data), len(data))
    return digest


def served_blob(registry: RegistryService, repository: str, digest: str) -> bytes:
    """A blob as the registry itself serves it, not through the proxy."""
    assert registry.username and registry.password
    response = requests.get(
        f"{registry.url}/v2/{repository}/blobs/{digest}",
        auth=(registry.username, registry.password),
        timeout=30,
    )
    response.raise_for_status()
    return response.content


def test_an_upload_location_on_another_host_gets_no_credentials(
    proxy: FaultProxy, registry: RegistryService
) -> None:
    proxy.set_mode("other-host-location")
    data = secrets.token_bytes(200_000)
    with client_of(proxy, registry) as client:
        digest = upload(client, data)
    assert {seen.method for seen in proxy.seen("relocated")} == {"POST"}  # a 401 first
    assert [seen.method for seen in proxy.upload_host.seen("forwarded")] == ["PATCH", "PUT"]
    assert proxy.upload_host.authorizations == []
    assert served_blob(registry, REPOSITORY, digest) == data


def test_another_host_gets_credentials_when_it_asks_with_its_own_challenge(
    proxy: FaultProxy, registry: RegistryService
) -> None:
    proxy.set_mode("other-host-location")
    proxy.upload_host.challenge = 'Basic realm="uploads"'
    data = secrets.token_bytes(100_000)
    with client_of(proxy, registry) as client:
        digest = upload(client, data)
        # The challenge is not remembered: the next upload starts without credentials again.
        upload(client, b"a second blob")
    # Each request went without credentials first, then with them after its 401: the PATCH
    # body was sent again from its start.
    assert [seen.method for seen in proxy.upload_host.seen()] == ["PATCH"] * 2 + ["PUT"] * 2 + [
        "PATCH"
    ] * 2 + ["PUT"] * 2
    assert proxy.upload_host.authorizations == [basic(registry)] * 4
    assert served_blob(registry, REPOSITORY, digest) == data


def test_a_blob_read_redirected_to_a_cdn_gives_bytes_and_size_without_credentials(
    proxy: FaultProxy, registry: RegistryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = secrets.token_bytes(50_000)
    with client_of(proxy, registry) as client:
        digest = upload(client, data)
        absent = "sha256:" + hashlib.sha256(b"never uploaded").hexdigest()
        # requests would add ~/.netrc's credentials for a host a request goes to, the CDN's
        # included (netrc knows no ports): shipit's client must not let it.
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        proxy.set_mode("cdn-redirect")
        assert client.blob_size(REPOSITORY, digest) == len(data)
        assert client.blob_size(REPOSITORY, absent) is None  # the registry's own 404
        response = client._request("GET", f"/v2/{REPOSITORY}/blobs/{digest}", scope="")
        assert response is not None and response.content == data
    assert [(s.method, s.action) for s in proxy.seen() if s.action != "forwarded"] == [
        ("HEAD", "redirected"),
        ("GET", "redirected"),
    ]
    assert [seen.method for seen in proxy.cdn.seen("forwarded")] == ["HEAD", "GET"]
    assert proxy.cdn.authorizations == []


class Redirecting(HttpService):
    """A registry that demands Basic credentials and answers blob reads with redirects:
    `hops` of them on its own host, then one to `elsewhere` (a URL), or forever."""

    def __init__(self, hops: int, elsewhere: str = "") -> None:
        super().__init__(name="redirecting")
        self.hops = hops
        self.elsewhere = elsewhere
        self.seen: list[tuple[str, str, str | None]] = []

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        sent = request.headers.get("Authorization")
        self.seen.append((request.command, request.path, sent))
        hop = int(request.path.rsplit("/hop", 1)[1]) if "/hop" in request.path else 0
        if sent is None:
            status, headers = 401, {"WWW-Authenticate": 'Basic realm="r"'}
        elif hop < self.hops or not self.elsewhere:
            status, headers = 307, {"Location": f"/v2/{REPOSITORY}/hop{hop + 1}"}
        else:
            status, headers = 307, {"Location": self.elsewhere}
        request.send_response(status)
        for name, value in {**headers, "Content-Length": "0"}.items():
            request.send_header(name, value)
        request.end_headers()


def test_a_redirect_on_the_registrys_own_host_keeps_the_credentials(
    proxy: FaultProxy, registry: RegistryService
) -> None:
    with client_of(proxy, registry) as client:
        digest = upload(client, b"a blob behind three redirects")
    presigned = proxy.cdn.url_for(
        proxy.cdn.grant(basic(registry)), f"/v2/{REPOSITORY}/blobs/{digest}"
    )
    with (
        Redirecting(hops=2, elsewhere=presigned) as server,
        RegistryClient(server.host, Credentials("AWS", "p")) as client,
    ):
        response = client._request("GET", f"/v2/{REPOSITORY}/blobs/x", scope="")
    assert response is not None and response.content == b"a blob behind three redirects"
    # A 401, then the credentials on every hop on the registry's host, none on the CDN's.
    assert [sent is not None for _, _, sent in server.seen] == [False, True, True, True]
    assert [seen.method for seen in proxy.cdn.seen("forwarded")] == ["GET"]
    assert proxy.cdn.authorizations == []


def test_a_redirect_loop_is_one_error() -> None:
    with (
        Redirecting(hops=0) as server,
        RegistryClient(server.host, Credentials("u", "p")) as client,
        pytest.raises(PushError, match=r"redirected GET /v2/.* more than 5 times"),
    ):
        client._request("GET", f"/v2/{REPOSITORY}/blobs/x", scope="")
    assert len(server.seen) == 7  # the first request, its 401's answer, 5 redirects


# -- pushes on the engine: shipit's own upload through the proxy ----------------------


@pytest.fixture
def own_upload() -> None:
    """make test runs this file on the local classic engine, where shipit uploads itself."""
    assert shipit_uploads(), "shipit uploads only on a local engine with the classic store"


def build_committed(scenario: PushScenario) -> None:
    """A build of new content, committed, so that a rebuild elsewhere carries its labels."""
    nonce = scenario.project.root / "site" / "static" / "nonce.txt"
    nonce.write_text(secrets.token_hex(16))
    commit_all(scenario.project.root)
    built = scenario.project.shipit("build", "--json", env=scenario.env())
    assert built.code == 0, built.output
    scenario.built = report_of(built)


def pushed(scenario: PushScenario) -> tuple[dict[str, Any], Result]:
    """The push's report entry for the scenario's registry, and the push's output."""
    result, _ = scenario.push()
    assert result.code == 0, result.output
    return registries(report_of(result))[scenario.target], result


@pytest.fixture
def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.netrc naming the loopback host (netrc knows no ports): requests adds its
    credentials to any request to that host, a CDN's included, unless told not to."""
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))


@pytest.mark.reliability(
    "blob HEADs and GETs answered 307 to a CDN on another port (a push, an edit, a CI re-run "
    "whose label check reads the config), with a ~/.netrc naming the host",
    "exit 0 each time; the edit uploads the site layer only; the CDN gets no Authorization",
)
@pytest.mark.usefixtures("netrc", "own_upload")
def test_blob_reads_redirected_to_a_cdn_in_a_push_and_a_rerun_send_it_no_credentials(
    scenario: PushScenario, reliability: Recorder
) -> None:
    proxy = scenario.proxy
    proxy.set_mode("cdn-redirect")
    build_committed(scenario)
    first, _ = pushed(scenario)
    assert first["status"] == "pushed"

    # An edit: the base layer is in the registry, which a redirected HEAD must still say.
    build_committed(scenario)
    edit_built_at = time.time()
    before = len(proxy.seen())
    second, result = pushed(scenario)
    assert second["status"] == "pushed"
    assert len(uploaded_layers(result, scenario.target)) == 1, result.stderr  # the site's
    heads = [s for s in proxy.seen()[before:] if (s.method, s.action) == ("HEAD", "redirected")]
    assert heads, proxy.seen()[before:]

    # A CI re-run of that commit from a fresh clone, built by docker build (which dates the
    # image by the clock): the label check reads the config blob.
    remove_project_leftovers(scenario.project.image)
    shutil.rmtree(scenario.project.root / ".shipit")
    wait_for_the_next_second(edit_built_at)
    rebuilt = scenario.project.shipit("build", "--json", env=scenario.env(SHIPIT_BUILDER="docker"))
    assert rebuilt.code == 0, rebuilt.output
    assert report_of(rebuilt)["image_id"] != scenario.built["image_id"]
    before = len(proxy.seen())
    third, result = pushed(scenario)
    assert third["status"] == "unchanged", result.stderr
    assert "built from the same input" in result.stderr
    reads = [s for s in proxy.seen()[before:] if (s.method, s.action) == ("GET", "redirected")]
    assert len(reads) == 1, proxy.seen()[before:]

    reliability.result(result)
    cdn = proxy.cdn.seen("forwarded")
    reliability.observe(
        f"{len(cdn)} CDN requests, {len(proxy.cdn.authorizations)} with an Authorization"
    )
    assert {seen.method for seen in cdn} == {"HEAD", "GET"}
    assert proxy.cdn.authorizations == []


@pytest.mark.reliability(
    "ECR: every upload's Location is an absolute URL on another port (as S3-backed "
    "registries and presigned URLs answer)",
    "exit 0; the other host gets no Authorization (ECR's Basic password); whole image",
)
@pytest.mark.usefixtures("own_upload")
def test_ecr_upload_locations_on_another_host_get_no_password(
    ecr_scenario: PushScenario, reliability: Recorder
) -> None:
    proxy = ecr_scenario.proxy
    proxy.set_mode("other-host-location")
    ecr_scenario.build()
    entry, result = pushed(ecr_scenario)
    reliability.result(result)
    reliability.observe(
        f"{len(proxy.upload_host.seen())} requests to the other host, "
        f"{len(proxy.upload_host.authorizations)} with an Authorization"
    )
    assert entry["status"] == "pushed"
    relocated = proxy.seen("relocated")
    assert relocated and {seen.method for seen in relocated} == {"POST"}
    sent_there = {seen.method for seen in proxy.upload_host.seen("forwarded")}
    assert sent_there == {"PATCH", "PUT"}
    assert proxy.upload_host.authorizations == []
    ecr_scenario.assert_pushed()


def first_after(log: list[Seen], seen: Seen) -> Seen:
    later = log[log.index(seen) + 1 :]
    assert later, f"nothing after {seen}: {log}"
    return later[0]


@pytest.mark.reliability(
    "429 with Retry-After: 2 on the first manifest read (once)",
    "exit 0; the next attempt starts 2 s or more later and the progress line says why",
)
def test_a_429_with_retry_after_is_retried_after_the_wait_it_asks_for(
    scenario: PushScenario, reliability: Recorder
) -> None:
    scenario.build()
    scenario.proxy.set_mode("429", count=1, retry_after="2", match=MANIFESTS)
    entry, result = pushed(scenario)
    reliability.result(result)
    assert entry["status"] == "pushed" and entry["tags"][0]["attempts"] == 2
    limited = scenario.proxy.seen("429")
    assert len(limited) == 1
    retried = first_after(scenario.proxy.seen(), limited[0])
    reliability.observe(f"next request {retried.at - limited[0].at:.1f} s after the 429")
    assert retried.at - limited[0].at >= 2.0, (limited, retried)
    assert "registry asked to wait 2 s (Retry-After); retrying" in result.stderr
    scenario.assert_pushed()


@pytest.mark.reliability(
    "429 with Retry-After: 3600 (beyond shipit's 60 s cap)",
    "exit 9 at once, one line naming the wait, the rate limit and when to push again; no tag",
)
def test_a_429_with_a_retry_after_beyond_the_cap_fails_at_once_saying_when(
    scenario: PushScenario, reliability: Recorder
) -> None:
    scenario.build()
    scenario.proxy.set_mode("429", count=1, retry_after="3600", match=MANIFESTS)
    result, took = scenario.push()
    reliability.result(result)
    reliability.observe(f"{took:.1f} s")
    assert result.code == ExitCode.PUSH, result.output
    assert took < 20
    line = error_line(result)
    assert "asked to wait 3600 s (Retry-After)" in line
    assert "its rate limit: 100 requests per 6 h, 0 left" in line
    assert re.search(r"push again after \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line), line
    limited = scenario.proxy.seen("429")
    assert len(limited) == 1
    assert not [s for s in scenario.proxy.seen() if s.at > limited[0].at]  # no second try
    scenario.assert_nothing_pushed()


@pytest.mark.reliability(
    "429 with Retry-After: 1 on every manifest read (SHIPIT_PUSH_ATTEMPTS=2)",
    "exit 9 after 2 attempts, naming Docker Hub's rate limit; no tag",
)
def test_a_rate_limit_that_outlasts_every_attempt_is_named_in_the_error(
    scenario: PushScenario, reliability: Recorder
) -> None:
    scenario.build()
    scenario.proxy.set_mode("429", retry_after="1", match=MANIFESTS)
    result, _ = scenario.push()
    reliability.result(result)
    assert result.code == ExitCode.PUSH, result.output
    assert len(scenario.proxy.seen("429")) == scenario.attempts
    line = error_line(result)
    assert "answered 429" in line and "its rate limit: 100 requests per 6 h, 0 left" in line
    scenario.assert_nothing_pushed()


@pytest.mark.reliability(
    "connection reset 64 KiB into the PATCH of a layer of several hundred kB (once)",
    "exit 0: shipit's next attempt uploads the layer again from its start; the registry "
    "serves the reported digest and every layer hashes to its digest",
)
@pytest.mark.usefixtures("own_upload")
def test_a_reset_in_the_middle_of_a_patch_is_sent_again_from_its_start(
    scenario: PushScenario, reliability: Recorder
) -> None:
    # A site layer of random bytes, several of the proxy's 64 KiB pieces once compressed: the
    # reset comes after the first piece, in the middle of the PATCH's body.
    static = scenario.project.root / "site" / "static"
    (static / "noise.bin").write_bytes(secrets.token_bytes(600_000))
    scenario.build()
    scenario.proxy.set_mode("reset-upload", count=1, match=r"^PATCH ")
    entry, result = pushed(scenario)
    reliability.result(result)
    assert entry["status"] == "pushed"
    assert entry["tags"][0]["attempts"] == 2, result.stderr
    resets = scenario.proxy.seen("reset")
    assert len(resets) == 1 and resets[0].method == "PATCH"
    after = [s for s in scenario.proxy.seen() if s.at > resets[0].at]
    # The upload starts again: a new session, and the whole layer in one PATCH.
    assert [s.method for s in after if "/blobs/uploads/" in s.path][:2] == ["POST", "PATCH"]
    assert scenario.built["image_id"] in scenario.client().image_ids(scenario.repository, "latest")
    with scenario.client() as client:
        manifest = client.get_manifest(scenario.repository, "latest")
        assert manifest.digest == entry["digest"]
        for layer in manifest.content["layers"]:
            data = served_blob(scenario.registry, scenario.repository, layer["digest"])
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
            assert len(data) == layer["size"]
    scenario.assert_pushed()
