"""Faults: a failing registry, a lost engine, Ctrl-C, a crashing container.

Registry faults are injected by tests/faultproxy.py between the Docker engine (and shipit's
own registry client) and a real Distribution registry. Whatever happens, the registry,
queried directly, must hold either the whole image under a tag (manifest and every blob it
lists) or no tag at all, and nothing shipit made may be left behind.

The engine retries a failed layer upload by itself (5 tries, waiting 5, 10, 15 and 20 s
between them, measured: 50 s when every upload is cut), so the two slow scenarios run in
the background while the others run.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from harness.faultproxy import FaultProxy, is_blob_upload
from harness.loopback import HttpService
from harness.registry_reader import RegistryReader
from harness.services import MotoService, RegistryService, free_port, moto_ecr_password, wait_until
from shipit.engine import Engine
from shipit.errors import ExitCode
from shipit.registries.distribution import RegistryClient
from shipit.registries.errors import RegistryResponseError
from tests.conftest import (
    HUB_USER,
    Project,
    PublishProject,
    Result,
    copy_example,
    shipit_containers,
)
from tests.conftest import remove_project_leftovers as remove_image_tags
from tests.leftovers import (
    engine_image_store,
    image_references,
    running_containers_of,
    shipit_uploads,
)
from tests.reliability import Recorder, Row, merge_rows, read_rows, render_doc

pytestmark = pytest.mark.engine

# Bounds: no scenario may take longer than these, or the test fails.
PUSH_TIMEOUT = 60.0
ENGINE_RETRY_BUDGET = 50.0  # 5 + 10 + 15 + 20 s of the engine's own upload retries
INTERRUPT_GRACE = 15.0
MANIFEST_PUT = r"^PUT /v2/.*/manifests/"  # the engine's manifest upload, as FaultProxy matches it


# -- helpers ------------------------------------------------------------------------------


def last_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def error_line(result: Result) -> str:
    """The one `shipit: error:` line (details such as container logs may follow it)."""
    found = [line for line in result.stderr.splitlines() if line.startswith("shipit: error: ")]
    assert len(found) == 1, f"expected exactly one error line:\n{result.stderr}"
    return found[0]


def report_of(result: Result) -> dict[str, Any]:
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def registries(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    push = report.get("push", report)
    return {entry["registry"]: entry for entry in push["registries"]}


def registry_state(client: RegistryClient, repository: str) -> dict[str, str]:
    """tag -> "whole", or what is missing, for every tag the registry lists."""
    state: dict[str, str] = {}
    for tag in client.tags(repository):
        try:
            manifest = client.get_manifest(repository, tag)
        except RegistryResponseError as error:
            state[tag] = f"manifest missing ({error.status})"
            continue
        digests = [manifest.config_digest or "no config"]
        digests += [str(layer.get("digest")) for layer in manifest.content.get("layers", [])]
        missing = [
            d
            for d in digests
            if not d.startswith("sha256:") or not client.blob_exists(repository, d)
        ]
        state[tag] = "whole" if not missing else f"blobs missing: {', '.join(missing)}"
    return dict(sorted(state.items()))


def assert_whole_or_absent(
    client: RegistryClient, repository: str, *, present: tuple[str, ...] = ()
) -> dict[str, str]:
    state = registry_state(client, repository)
    broken = {tag: what for tag, what in state.items() if what != "whole"}
    assert not broken, f"tags with missing parts in {repository}: {broken}"
    for tag in present:
        assert tag in state, f"{repository}:{tag} is not in the registry: {state}"
    return state


# Ctrl-C's default meaning, then shipit in the same process: a CI runner may start the tests
# with SIGINT ignored, and a child would inherit that (Python then installs no handler).
_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'shipit', *sys.argv[1:]])"
)


def start_shipit(project: Project, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """shipit in the background, as a terminal would start it."""
    return subprocess.Popen(
        [sys.executable, "-c", _WITH_DEFAULT_SIGINT, *args],
        env=env,
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def shipit_in_background(
    project: Project, args: list[str], env: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    """start_shipit(), and kill it at the end of the block if it still runs."""
    proc = start_shipit(project, args, env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def interrupt_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], what: str, wait: float
) -> tuple[Result, float | None]:
    """SIGINT as soon as `ready()` (shipit must still run then), then up to INTERRUPT_GRACE s
    for shipit to end: (result, seconds it took), seconds None when it had to be killed."""
    wait_until(lambda: ready() or proc.poll() is not None, wait, what=what)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        stdout, stderr = proc.communicate(timeout=INTERRUPT_GRACE)
        took: float | None = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=30)
        took = None
    return Result(proc.returncode, stdout, stderr), took


def after_sigint(took: float | None) -> str:
    if took is None:
        return f"still running {INTERRUPT_GRACE:g} s after SIGINT: killed"
    return f"exited {took:.1f} s after SIGINT"


def assert_interrupted(result: Result, took: float | None) -> None:
    assert took is not None, f"still running {INTERRUPT_GRACE:g} s after SIGINT"
    assert result.code == ExitCode.INTERRUPTED, result.output
    assert last_error_line(result).startswith("shipit: error: interrupted")


def make_unique(project: Project) -> None:
    """New site content, so that its layer is new to every registry (a real upload)."""
    with project.site_toml.open("a") as data:
        data.write(f'\nfault_nonce = "{uuid.uuid4().hex}"\n')


# -- a tiny base image: pushes upload a few kB, so every scenario can have its own proxy ---


@dataclass
class TinyBaseProject(Project):
    base: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{"SHIPIT_BASE_IMAGE": self.base, **extra})


@dataclass
class PushScenario:
    """One project pushing to one registry (Docker Hub's stand-in, or ECR's with moto)
    through its own fault proxy."""

    project: Project
    proxy: FaultProxy
    registry: RegistryService
    token: str
    repository: str
    attempts: int = 2
    target: str = "dockerhub"
    # "engine" for a test of how the engine's own push meets a fault.
    uploader: str = "auto"
    moto: MotoService | None = None
    proc: subprocess.Popen[str] | None = field(default=None, repr=False)
    collector: threading.Thread | None = field(default=None, repr=False)
    outcome: tuple[Result, float] | None = field(default=None, repr=False)
    started: float = 0.0
    built: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def user(self) -> str:
        return "AWS" if self.target == "ecr" else HUB_USER

    def env(self, **extra: str) -> dict[str, str]:
        if self.target == "ecr":
            assert self.moto is not None
            registry = {
                **self.moto.env(),
                "SHIPIT_ECR_REGISTRY": self.proxy.host,
                "SHIPIT_ECR_REPOSITORY": self.repository,
            }
        else:
            registry = {
                "SHIPIT_DOCKERHUB_REGISTRY": self.proxy.host,
                "SHIPIT_DOCKERHUB_REPOSITORY": self.repository,
                "DOCKERHUB_USERNAME": HUB_USER,
                "DOCKERHUB_TOKEN": self.token,
            }
        return self.project.env(
            **registry,
            SHIPIT_PUSH_ATTEMPTS=str(self.attempts),
            SHIPIT_UPLOADER=self.uploader,
            **extra,
        )

    @property
    def push_args(self) -> list[str]:
        return ["push", "--to", self.target, "--skip-smoke", "--json"]

    def build(self) -> dict[str, Any]:
        make_unique(self.project)
        built = self.project.shipit("build", "--json", env=self.env())
        assert built.code == 0, built.output
        document = json.loads(built.stdout)
        assert isinstance(document, dict)
        self.built = document
        return document

    def push_with_fault(
        self, reliability: Recorder, mode: str, **fault: Any
    ) -> tuple[Result, float]:
        """Builds, sets the proxy's fault (FaultProxy.set_mode), pushes, and records the
        result and the seconds the push took."""
        self.build()
        self.proxy.set_mode(mode, **fault)
        result, took = self.push()
        reliability.result(result)
        reliability.observe(f"{took:.1f} s")
        return result, took

    def push(self, timeout: float = PUSH_TIMEOUT) -> tuple[Result, float]:
        started = time.monotonic()
        result = self.project.shipit(*self.push_args, env=self.env(), timeout=timeout)
        return result, time.monotonic() - started

    def start_push(self) -> None:
        """The push in the background; a thread collects its output and when it ended."""
        self.started = time.monotonic()
        self.proc = start_shipit(self.project, self.push_args, self.env())
        proc = self.proc

        def collect() -> None:
            stdout, stderr = proc.communicate()
            self.outcome = (Result(proc.returncode, stdout, stderr), time.monotonic())

        self.collector = threading.Thread(target=collect, name="push-collector", daemon=True)
        self.collector.start()

    def wait_push(self, timeout: float) -> tuple[Result, float]:
        """(result, seconds the push took); fails the test once `timeout` s have passed."""
        assert self.proc is not None and self.collector is not None
        self.collector.join(timeout=max(1.0, timeout))
        if self.outcome is None:
            self.proc.kill()
            self.collector.join(timeout=30)
            stderr = self.outcome[0].stderr if self.outcome else ""
            pytest.fail(f"the push was still running after {timeout:g} s:\n{stderr[-2000:]}")
        result, ended = self.outcome
        return result, ended - self.started

    def client(self) -> RegistryClient:
        """The registry itself, not the proxy."""
        return RegistryReader(self.registry.host, self.user, self.token)

    def state(self, *, present: tuple[str, ...] = ()) -> dict[str, str]:
        with self.client() as client:
            return assert_whole_or_absent(client, self.repository, present=present)

    def assert_pushed(self) -> dict[str, str]:
        """The registry holds the built image, whole, under its sha tag and `latest`, and
        nothing is left behind here."""
        sha_tag = self.built["tags"][0].rsplit(":", 1)[1]
        state = self.state(present=(sha_tag, "latest"))
        with self.client() as client:
            assert self.built["image_id"] in client.image_ids(self.repository, "latest")
        assert self.leftovers() == []
        return state

    def assert_nothing_pushed(self) -> None:
        """No tag in the registry, and nothing left behind here."""
        assert self.state() == {}
        assert self.leftovers() == []

    def leftovers(self) -> list[str]:
        return shipit_containers(self.project.image) + image_references(self.proxy.host + "/")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.collector is not None:
            self.collector.join(timeout=30)
        self.proxy.stop()


def new_scenario(
    root: Path, registry: RegistryService, token: str, base: str, attempts: int
) -> PushScenario:
    image = f"shipit-test/{uuid.uuid4().hex[:10]}"
    project = TinyBaseProject(root=copy_example(root), image=image, base=base)
    proxy = FaultProxy("127.0.0.1", registry.port).start()
    return PushScenario(
        project=project,
        proxy=proxy,
        registry=registry,
        token=token,
        repository=f"faults/{image.rsplit('/', 1)[-1]}",
        attempts=attempts,
    )


@pytest.fixture
def scenario(
    tmp_path: Path, hub_registry: RegistryService, hub_token: str, tiny_base: str
) -> Iterator[PushScenario]:
    made = new_scenario(tmp_path / "site-project", hub_registry, hub_token, tiny_base, 2)
    yield made
    made.close()
    remove_image_tags(made.project.image)


@pytest.fixture
def ecr_scenario(
    tmp_path: Path, ecr_registry: RegistryService, moto: MotoService, tiny_base: str
) -> Iterator[PushScenario]:
    """Pushes `--to ecr`: boto3 against moto for the repository and token, the engine
    through the proxy to the registry that stands in for ECR."""
    made = new_scenario(tmp_path / "site-project", ecr_registry, moto_ecr_password(), tiny_base, 2)
    made.target = "ecr"
    made.moto = moto
    made.repository = "faults-" + made.repository.rsplit("/", 1)[-1]
    yield made
    made.close()
    remove_image_tags(made.project.image)


# The two scenarios that take long (the engine's own retry delays, shipit's 30 s registry
# timeout) start when the module does and are checked by their tests at the end.
BACKGROUND = {
    "reset-every-upload": "test_connection_reset_on_every_blob_upload_fails_clearly",
    "slower-than-timeout": "test_registry_slower_than_the_timeout_is_retried",
}


@pytest.fixture(scope="module", autouse=True)
def background(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    hub_registry: RegistryService,
    hub_token: str,
    tiny_base: str,
) -> Iterator[dict[str, PushScenario]]:
    selected = {item.name for item in request.session.items}
    started: dict[str, PushScenario] = {}
    try:
        for name, test in BACKGROUND.items():
            if test not in selected:
                continue
            root = tmp_path_factory.mktemp(name) / "site-project"
            attempts = 1 if name == "reset-every-upload" else 2
            made = new_scenario(root, hub_registry, hub_token, tiny_base, attempts)
            started[name] = made
            made.build()
            if name == "reset-every-upload":
                made.proxy.set_mode("reset-upload")
            else:
                # Only shipit's first look at the tag is held, longer than its 30 s timeout.
                made.proxy.set_mode("slow", count=1, delay=45, match=r"^GET /v2/.*/manifests/")
            made.start_push()
        yield started
    finally:
        for made in started.values():
            made.close()
            remove_image_tags(made.project.image)


# -- registry faults ----------------------------------------------------------------------


@pytest.mark.reliability(
    "registry answers 503 to the first 2 requests (SHIPIT_PUSH_ATTEMPTS=3)",
    "exit 0 after retries; registry holds the whole image under both tags",
)
def test_503_for_the_first_requests_is_retried(
    scenario: PushScenario, reliability: Recorder
) -> None:
    scenario.attempts = 3
    result, _ = scenario.push_with_fault(reliability, "503", count=2)
    assert result.code == 0, result.output
    entry = registries(report_of(result))["dockerhub"]
    attempts = [tag["attempts"] for tag in entry["tags"]]
    reliability.observe(f"503s served {scenario.proxy.faults_injected}, attempts {attempts}")
    assert scenario.proxy.faults_injected == 2
    assert attempts[0] == 3 and entry["status"] == "pushed"
    assert "attempt 1 failed" in result.stderr and "503" in result.stderr
    reliability.observe(f"registry: {scenario.assert_pushed()}")


@pytest.mark.reliability(
    "registry answers 503 to every request (SHIPIT_PUSH_ATTEMPTS=2)",
    "exit 9 (push failed) naming the 503, after 2 attempts; no tag in the registry",
)
def test_503_for_every_request_fails_clearly(scenario: PushScenario, reliability: Recorder) -> None:
    result, took = scenario.push_with_fault(reliability, "503")
    reliability.observe(f"{scenario.proxy.request_count} requests")
    assert result.code == ExitCode.PUSH, result.output
    line = last_error_line(result)
    assert line.startswith("shipit: error: push failed for dockerhub"), line
    assert "503" in line and scenario.proxy.host in line
    assert "attempt 1 failed" in result.stderr
    assert "attempt 2 failed" not in result.stderr  # 2 attempts: one retry, then the error
    assert took < PUSH_TIMEOUT
    scenario.assert_nothing_pushed()


@pytest.mark.reliability(
    "registry stalls every upload (SHIPIT_ENGINE_TIMEOUT=2, SHIPIT_PUSH_ATTEMPTS=2)",
    "exit 14 naming the stalled push and the 2 s, after 2 attempts; no tag in the registry",
)
def test_a_stalled_upload_gives_up_after_the_engine_timeout(
    scenario: PushScenario, reliability: Recorder
) -> None:
    scenario.build()
    scenario.proxy.set_mode("slow", delay=600, match=r"^(POST|PATCH|PUT) /v2/.*/blobs/uploads/")
    started = time.monotonic()
    result = scenario.project.shipit(
        *scenario.push_args, env=scenario.env(SHIPIT_ENGINE_TIMEOUT="2"), timeout=PUSH_TIMEOUT
    )
    took = time.monotonic() - started
    reliability.result(result)
    reliability.observe(f"{took:.1f} s")
    assert result.code == ExitCode.REGISTRY_UNREACHABLE, result.output
    line = last_error_line(result)
    assert "made no progress for 2 s" in line, line
    assert "attempt 1 failed" in result.stderr
    assert scenario.proxy.seen("slow")
    scenario.assert_nothing_pushed()


@pytest.mark.reliability(
    "503 once on the engine's manifest upload (PUT /v2/.../manifests/)",
    "exit 0: shipit retries the push; whole image under both tags",
)
def test_503_on_the_manifest_upload_is_retried(
    scenario: PushScenario, reliability: Recorder
) -> None:
    result, _ = scenario.push_with_fault(reliability, "503", count=1, match=MANIFEST_PUT)
    assert result.code == 0, result.output
    assert scenario.proxy.faults_injected == 1
    assert "attempt 1 failed" in result.stderr
    reliability.observe(f"registry: {scenario.assert_pushed()}")


@pytest.mark.reliability(
    "503 on every manifest upload: blobs arrive, the manifest never does",
    "exit 9 naming the 503; blobs may stay but no tag points at a partial image",
)
def test_503_on_every_manifest_upload_leaves_no_tag(
    scenario: PushScenario, reliability: Recorder
) -> None:
    result, _ = scenario.push_with_fault(reliability, "503", match=MANIFEST_PUT)
    assert result.code == ExitCode.PUSH, result.output
    assert "503" in last_error_line(result)
    assert scenario.proxy.faults_injected == 2  # one manifest PUT per attempt
    uploads = [seen for seen in scenario.proxy.seen() if is_blob_upload(seen.method, seen.path)]
    assert uploads, "the blobs should have been uploaded before the manifest was refused"
    scenario.assert_nothing_pushed()


@pytest.mark.reliability(
    "503 once on the engine's GET /v2/ ping (the engine then pushes without credentials)",
    "exit 0: a transient fault is retried, not reported as refused credentials",
)
def test_503_on_the_engine_ping_is_transient(scenario: PushScenario, reliability: Recorder) -> None:
    # The engine's own push, which a local classic engine leaves to shipit otherwise. The
    # classic store's engine pings /v2/ first; the containerd store's asks for a blob.
    scenario.uploader = "engine"
    first_request = r"^GET /v2/$" if engine_image_store() == "classic" else r"^HEAD /v2/"
    result, _ = scenario.push_with_fault(reliability, "503", count=1, match=first_request)
    assert scenario.proxy.faults_injected == 1
    assert result.code == 0, result.output
    scenario.assert_pushed()


@pytest.mark.reliability(
    "connection reset in the middle of a blob upload (once)",
    "exit 0 (the engine retries the upload after 5 s); whole image under both tags",
)
def test_connection_reset_mid_upload_once_recovers(
    scenario: PushScenario, reliability: Recorder
) -> None:
    result, took = scenario.push_with_fault(reliability, "reset-upload", count=1)
    assert scenario.proxy.faults_injected == 1
    assert result.code == 0, result.output
    assert took < PUSH_TIMEOUT
    reliability.observe(f"registry: {scenario.assert_pushed()}")


@pytest.mark.reliability(
    "ECR: connection reset in the middle of a blob upload (once), then 503 on the first "
    "manifest upload",
    "exit 0: the upload and the push are retried; whole image under both tags",
)
def test_ecr_reset_then_503_recovers(ecr_scenario: PushScenario, reliability: Recorder) -> None:
    # The classic store's engine retries the reset upload itself; shipit's own upload and the
    # containerd store's engine give that attempt up, so shipit's next attempt meets the 503
    # and a third succeeds.
    attempts = 2 if engine_image_store() == "classic" and not shipit_uploads() else 3
    ecr_scenario.attempts = attempts
    ecr_scenario.build()
    ecr_scenario.proxy.set_mode("reset-upload", count=1)
    proxy = ecr_scenario.proxy

    def then_503() -> bool:
        # Once the reset happened, the next fault is the manifest's.
        if proxy.faults_injected == 1:
            proxy.set_mode("503", count=1, match=MANIFEST_PUT)
            return True
        return False

    switcher = threading.Thread(target=lambda: wait_until(then_503, 60, interval=0.01))
    switcher.start()
    result, took = ecr_scenario.push()
    switcher.join(timeout=5)
    reliability.result(result)
    reliability.observe(f"{proxy.faults_injected} faults, {took:.1f} s")
    assert proxy.faults_injected == 2, proxy.seen()
    assert result.code == 0, result.output
    entry = registries(report_of(result))["ecr"]
    assert entry["status"] == "pushed" and entry["tags"][0]["attempts"] == attempts
    reliability.observe(f"registry: {ecr_scenario.assert_pushed()}")


@pytest.mark.reliability(
    "every request 50 ms late",
    "exit 0; whole image under both tags",
)
def test_latency_on_every_request(scenario: PushScenario, reliability: Recorder) -> None:
    result, took = scenario.push_with_fault(reliability, "latency", delay=0.05)
    reliability.observe(f"{scenario.proxy.request_count} requests")
    assert result.code == 0, result.output
    assert scenario.proxy.request_count >= 10
    assert took >= scenario.proxy.request_count * 0.05 / 4  # the latency really applied
    scenario.assert_pushed()


@pytest.mark.reliability(
    "connection reset on every blob upload (SHIPIT_PUSH_ATTEMPTS=1)",
    "exit 14 naming the reset after shipit's one upload (exit 9 within the engine's own 5 "
    "tries, ~50 s, where the engine pushes); no tag",
)
def test_connection_reset_on_every_blob_upload_fails_clearly(
    background: dict[str, PushScenario], reliability: Recorder
) -> None:
    made = background["reset-every-upload"]
    result, took = made.wait_push(
        ENGINE_RETRY_BUDGET + PUSH_TIMEOUT - time.monotonic() + made.started
    )
    reliability.result(result)
    resets = made.proxy.faults_injected
    reliability.observe(f"{resets} uploads reset, {took:.1f} s")
    line = last_error_line(result)
    assert line.startswith("shipit: error: push failed for dockerhub"), line
    assert "reset" in line
    if shipit_uploads():
        # One attempt, ended by the first upload's reset.
        assert result.code == ExitCode.REGISTRY_UNREACHABLE, result.output
        assert resets == 1
    else:
        # The engine's own tries for each new layer (the tiny base's and the site's), in
        # parallel: 5 each on the classic store; the containerd store gives up the whole
        # push at its first reset (1 to 3 seen); shipit made one attempt.
        assert result.code == ExitCode.PUSH, result.output
        assert (5 if engine_image_store() == "classic" else 1) <= resets <= 10
    assert took < ENGINE_RETRY_BUDGET + 20
    made.assert_nothing_pushed()


@pytest.mark.reliability(
    "registry answers slower than shipit's 30 s registry timeout (once)",
    "exit 0: the timed-out request is retried; whole image under both tags",
)
def test_registry_slower_than_the_timeout_is_retried(
    background: dict[str, PushScenario], reliability: Recorder
) -> None:
    made = background["slower-than-timeout"]
    result, took = made.wait_push(made.started + 30 + PUSH_TIMEOUT - time.monotonic())
    reliability.result(result)
    reliability.observe(f"{took:.1f} s")
    assert made.proxy.faults_injected == 1
    assert result.code == 0, result.output
    assert "no answer within 30 s" in result.stderr
    assert took < 30 + 15  # the timeout, a short backoff and the push itself
    entry = registries(report_of(result))["dockerhub"]
    assert entry["tags"][0]["attempts"] == 2
    made.assert_pushed()


# -- a registry down for the whole push ---------------------------------------------------


@pytest.mark.reliability(
    "ECR's registry down for the whole ship (Docker Hub up)",
    "exit 14 naming the ECR host; Docker Hub's sha tag pushed and reported; no container",
)
def test_ecr_registry_down_docker_hub_completes(
    publish_project: PublishProject, reliability: Recorder
) -> None:
    project = publish_project
    assert project.hub
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: down for the whole push
    env = project.env(SHIPIT_ECR_REGISTRY=dead)
    result = project.shipit("ship", "--json", env=env)
    reliability.result(result)
    assert result.code == ExitCode.REGISTRY_UNREACHABLE, result.output
    by_name = registries(report_of(result))
    reliability.observe(
        f"ecr {by_name['ecr']['status']}, dockerhub {by_name['dockerhub']['status']} "
        f"({', '.join(t['tag'] + ' ' + t['status'] for t in by_name['dockerhub']['tags'])})"
    )
    assert by_name["ecr"]["status"] == "failed"
    assert by_name["ecr"]["error"]["exit_code"] == ExitCode.REGISTRY_UNREACHABLE
    assert by_name["dockerhub"]["status"] == "pushed"
    # latest moves only once every registry holds the sha tag.
    assert [tag["status"] for tag in by_name["dockerhub"]["tags"]] == ["pushed", "held-back"]
    line = last_error_line(result)
    assert line.startswith("shipit: error: push failed for ecr"), line
    assert dead in line
    sha_tag = by_name["dockerhub"]["tags"][0]["tag"]
    with RegistryReader(project.hub.host, HUB_USER, project.hub_token) as hub:
        state = assert_whole_or_absent(hub, project.hub_repository, present=(sha_tag,))
        assert "latest" not in state
    assert shipit_containers(project.image) == []
    assert image_references(dead + "/", project.hub.host + "/team/") == []


# -- the engine, Ctrl-C and a crashing container ------------------------------------------


@pytest.mark.reliability(
    "the Docker engine stops between build and run (DOCKER_HOST: a dead socket)",
    "exit 5 naming DOCKER_HOST; no container",
)
def test_engine_gone_between_build_and_run(
    engine: Engine, project: Project, tmp_path: Path, reliability: Recorder
) -> None:
    assert project.shipit("build").code == 0
    # A socket file nobody listens on: what a stopped dockerd leaves behind.
    dead = tmp_path / "dead-docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(dead))
    env = project.env(DOCKER_HOST=f"unix://{dead}", SHIPIT_PORT=str(free_port()))
    result = project.shipit("run", env=env)
    reliability.result(result)
    assert result.code == ExitCode.ENGINE, result.output
    line = last_error_line(result)
    assert line.startswith("shipit: error: "), line
    assert f"DOCKER_HOST=unix://{dead}" in line
    assert shipit_containers(project.image) == []


def never_ready(project: Project) -> None:
    """A site whose /healthz answers 503: the container runs, readiness never comes."""
    conf = project.root / "templates" / "nginx.conf.j2"
    text = conf.read_text()
    healthy = 'return 200 "ok {{ build.id }}\\n";'
    assert healthy in text, "the nginx template changed; update this test"
    conf.write_text(text.replace(healthy, 'return 503 "not ready\\n";'))


@pytest.mark.reliability(
    "SIGINT while `shipit run` waits for readiness",
    "exit 130 promptly with an `interrupted` error line; the container is removed",
)
def test_sigint_during_run(engine: Engine, project: Project, reliability: Recorder) -> None:
    never_ready(project)
    assert project.shipit("build").code == 0
    env = project.env(SHIPIT_PORT=str(free_port()))
    with shipit_in_background(project, ["run", "--ready-timeout", "120"], env) as proc:
        result, took = interrupt_when(
            proc, lambda: bool(running_containers_of(project.image)), "the container to run", 60
        )
    reliability.result(result)
    left = shipit_containers(project.image)
    reliability.observe(f"{after_sigint(took)}; containers left: {len(left)}")
    if result.code != ExitCode.INTERRUPTED:
        reliability.observe(f"last stderr line: {last_error_line(result)!r}")
    assert left == []
    assert_interrupted(result, took)


@pytest.mark.reliability(
    "SIGINT while `shipit ship` pushes through a registry that stalls every upload",
    "exit 130 promptly; the container is removed; no registry-named tag, no tag pushed",
)
def test_sigint_during_ship_push(
    engine: Engine,
    project: Project,
    hub_registry: RegistryService,
    hub_token: str,
    reliability: Recorder,
) -> None:
    repository = f"faults/{project.image.rsplit('/', 1)[-1]}"
    with FaultProxy("127.0.0.1", hub_registry.port) as proxy:
        # shipit's own look at the tag passes; the engine's uploads hang.
        proxy.set_mode("slow", delay=600, match=r"^(POST|PATCH|PUT) /v2/.*/blobs/uploads/")
        env = project.env(
            SHIPIT_DOCKERHUB_REGISTRY=proxy.host,
            SHIPIT_DOCKERHUB_REPOSITORY=repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=hub_token,
            SHIPIT_PUSH_ATTEMPTS="2",
            SHIPIT_PORT=str(free_port()),
        )
        with shipit_in_background(project, ["ship", "--to", "dockerhub"], env) as proc:
            result, took = interrupt_when(
                proc, lambda: bool(proxy.seen("slow")), "the push to reach the stalled registry", 90
            )
        leftover_tags = image_references(proxy.host + "/")
    reliability.result(result)
    reliability.observe(after_sigint(took))
    leftover_containers = shipit_containers(project.image)
    if leftover_containers or leftover_tags:
        when = "after the kill" if took is None else "after exit"
        reliability.observe(f"left {when}: {leftover_containers + leftover_tags}")
    assert_interrupted(result, took)
    assert leftover_containers == []
    assert leftover_tags == []
    with RegistryReader(hub_registry.host, HUB_USER, hub_token) as hub:
        assert assert_whole_or_absent(hub, repository) == {}


@pytest.mark.reliability(
    "the container crashes at start (broken nginx config)",
    "exit 7 with nginx's own error from the container log; nothing left running",
)
def test_container_crash_at_start(engine: Engine, project: Project, reliability: Recorder) -> None:
    conf = project.root / "templates" / "nginx.conf.j2"
    conf.write_text(conf.read_text().replace("server_tokens off;", "server_tokens maybe;"))
    assert project.shipit("build").code == 0
    result = project.shipit("run", "--port", str(free_port()))
    reliability.result(result)
    assert result.code == ExitCode.RUN, result.output
    line = error_line(result)
    assert "exited at start" in line
    assert 'invalid value "maybe"' in result.stderr  # nginx's words, from the container log
    assert shipit_containers(project.image) == []


# -- the tools of this suite: the fault proxy and the reliability table -------------------


class Echo(HttpService):
    """Answers every request with its method, path and body length."""

    protocol_version = "HTTP/1.1"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        if "chunked" in request.headers.get("Transfer-Encoding", ""):
            body = b""
            while True:
                size = int(request.rfile.readline().strip(), 16)
                if size == 0:
                    request.rfile.readline()
                    break
                body += request.rfile.read(size)
                request.rfile.readline()
        else:
            body = request.rfile.read(length)
        reply = f"{request.command} {request.path} {len(body)}".encode()
        request.send_response(200)
        request.send_header("Content-Length", str(len(reply)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(reply)


@pytest.fixture
def upstream() -> Iterator[Echo]:
    with Echo(name="echo") as server:
        yield server


def _request(port: int, method: str, path: str, body: Any = None, **kw: Any) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, **kw)
        response = connection.getresponse()
        return f"{response.status} {response.read().decode()}"
    finally:
        connection.close()


def test_fault_proxy_forwards_and_injects_503(upstream: Echo) -> None:
    with FaultProxy("127.0.0.1", upstream.port) as proxy:
        assert _request(proxy.port, "PUT", "/v2/a", b"x" * 200_000) == "200 PUT /v2/a 200000"
        chunks = iter([b"ab", b"cde"])
        assert _request(proxy.port, "PATCH", "/v2/b", chunks, encode_chunked=True) == (
            "200 PATCH /v2/b 5"
        )
        proxy.set_mode("503", count=2)
        assert [_request(proxy.port, "GET", "/v2/")[:3] for _ in range(3)] == ["503", "503", "200"]
        assert proxy.request_count == 5 and proxy.faults_injected == 2


def test_fault_proxy_resets_only_blob_uploads(upstream: Echo) -> None:
    with FaultProxy("127.0.0.1", upstream.port) as proxy:
        proxy.set_mode("reset-upload")
        upload = "/v2/x/blobs/uploads/1"
        assert _request(proxy.port, "GET", upload) == f"200 GET {upload} 0"
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _request(proxy.port, "PATCH", upload, b"y" * 300_000)
        assert [seen.action for seen in proxy.seen()] == ["forwarded", "reset"]


def test_fault_proxy_is_bounded_and_stops_with_requests_held(upstream: Echo) -> None:
    proxy = FaultProxy("127.0.0.1", upstream.port, max_connections=2).start()
    proxy.set_mode("slow", delay=600)
    errors: list[BaseException] = []

    def held() -> None:
        try:
            _request(proxy.port, "GET", "/v2/")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    clients = [threading.Thread(target=held, daemon=True) for _ in range(4)]
    for client in clients:
        client.start()
    wait_until(lambda: len(proxy.seen("slow")) == 2, 10, what="two held requests")
    assert proxy.active_connections == 2  # the other two wait in the backlog
    started = time.monotonic()
    port = proxy.port
    proxy.stop()
    assert time.monotonic() - started < 5
    for client in clients:
        client.join(timeout=15)
    assert not any(client.is_alive() for client in clients)
    assert len(errors) == 4  # every held or queued client saw the connection end
    assert not [t for t in threading.enumerate() if t.name.startswith(f"faultproxy-{port}")]


def _row(test: str, result: str = "pass", ran: str = "2025-01-01 00:00 UTC") -> Row:
    return Row(test, "Faults", test.rsplit("::", 1)[-1], "exit 0", "exit 0", result, ran)


def test_reliability_table_merges_partial_runs(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / "tests" / name).write_text("")
    old = [_row("tests/test_a.py::one"), _row("tests/test_b.py::two"), _row("tests/gone.py::x")]
    now = [_row("tests/test_a.py::one", "FAIL", ran="2025-02-02 00:00 UTC")]
    merged = merge_rows(old, now, {"tests/test_a.py::one"}, {"tests/test_a.py"}, tmp_path)
    # test_b did not run: its row stays; gone.py no longer exists: its row goes.
    assert [(row.test, row.result) for row in merged] == [
        ("tests/test_a.py::one", "FAIL"),
        ("tests/test_b.py::two", "pass"),
    ]
    # A module collected in full drops the rows of tests it no longer has.
    pruned = merge_rows(old, now, {"tests/test_a.py::one"}, {"tests/test_b.py"}, tmp_path)
    assert "tests/test_b.py::two" not in [row.test for row in pruned]

    doc = tmp_path / "RELIABILITY.md"
    tricky = _row("tests/test_a.py::one")
    tricky.observed = "a | b --> c\nsecond line"
    doc.write_text(render_doc([tricky], "2025-02-02 00:00 UTC", all_ran=True))
    assert read_rows(doc) == [tricky]
    assert "| a \\| b --> c second line |" in doc.read_text()


def test_reliability_recorder_reads_the_error_line() -> None:
    recorder = Recorder("case", "exit 4")
    recorder.result(Result(4, "", "progress\nshipit: error: templates/x.j2:3: bad\nlog\n"))
    recorder.failure = "AssertionError: boom"
    assert recorder.text() == (
        "exit 4; shipit: error: templates/x.j2:3: bad; test failed: AssertionError: boom"
    )
