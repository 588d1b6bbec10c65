"""The Docker engine's connection failing under shipit: a stall or a cut becomes one clear error.

Most cases talk to a stand-in engine on a loopback port that breaks each answer in one
way (docker-py cannot tell it from dockerd over tcp://); the last one pushes with the real
engine to a registry that stalls every upload.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import docker
import pytest

from harness.faultproxy import FaultProxy
from harness.loopback import HttpService
from harness.services import RegistryService
from shipit.engine import Engine
from shipit.errors import EngineError, ExitCode, PushError, RegistryUnreachableError
from shipit.push.retry import is_retryable
from tests.conftest import Project

API_VERSION = "1.41"
# Seconds the client waits for the engine before it gives up: short, the stand-in never answers.
CLIENT_TIMEOUT = 1


class BrokenEngine(HttpService):
    """Answers every request the way `fault` says and no better:

    silent: reads the request and never answers
    hangup: closes the connection without an answer
    stall: starts a streamed answer (status 200, one JSON line), then says nothing more
    cut: starts a streamed answer, then closes the connection in the middle of a chunk
    """

    FAULTS = ("silent", "hangup", "stall", "cut")
    protocol_version = "HTTP/1.1"

    def __init__(self, fault: str) -> None:
        super().__init__(name="broken-engine")
        self.fault = fault
        self._released = threading.Event()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        if length:
            request.rfile.read(length)
        request.close_connection = True
        if self.fault == "silent":
            self._released.wait(30)
            return
        if self.fault == "hangup":
            return
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        line = b'{"status": "working"}\r\n'
        if self.fault == "stall":
            request.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            request.wfile.flush()
            self._released.wait(30)
        else:  # cut: a chunk that announces more than it holds
            request.wfile.write(b"%x\r\n%s" % (len(line) + 100, line))
            request.wfile.flush()

    def stop(self, timeout: float = 10.0) -> None:
        self._released.set()
        super().stop(timeout)


def engine_at(server: BrokenEngine) -> Engine:
    api = docker.APIClient(
        base_url=f"tcp://{server.host}", version=API_VERSION, timeout=CLIENT_TIMEOUT
    )
    return Engine(api)


def tar_of(name: str, content: bytes) -> bytes:
    """A tar archive holding one file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


ENGINE_CALLS: dict[str, Callable[[Engine], Any]] = {
    "facts": lambda engine: engine.facts(),
    "inspect image": lambda engine: engine.image("shipit-test/any:1"),
    "list containers": lambda engine: engine.containers_with_labels({"io.shipit.image": "x"}),
    "tag": lambda engine: engine.tag("sha256:" + "0" * 64, "shipit-test/any", "1"),
    "pull": lambda engine: engine.pull("shipit-test/any:1"),
    "build": lambda engine: engine.build(tar_of("Dockerfile", b"FROM scratch\n"), "any:1"),
}


# docker-py reads pull and build streams without a timeout (a build step may be silent for
# long), so only a cut connection ends them.
CASES = [
    (call, fault)
    for call in ENGINE_CALLS
    for fault in BrokenEngine.FAULTS
    if call not in ("pull", "build") or fault in ("hangup", "cut")
]


@pytest.mark.parametrize(("call", "fault"), CASES)
def test_engine_that_stalls_or_drops_the_connection_is_an_engine_error(
    call: str, fault: str
) -> None:
    with BrokenEngine(fault) as server, pytest.raises(EngineError) as caught:
        ENGINE_CALLS[call](engine_at(server))
    error = caught.value
    assert error.exit_code == ExitCode.ENGINE
    if fault in ("silent", "stall"):
        assert f"sent nothing for {CLIENT_TIMEOUT} s" in error.message
    else:
        assert error.message.startswith(f"lost the Docker engine at {server.url}")
    assert "`docker info`" in error.hint


@pytest.mark.parametrize("fault", BrokenEngine.FAULTS)
def test_push_through_an_engine_that_stalls_or_drops_the_connection(fault: str) -> None:
    with BrokenEngine(fault) as server, pytest.raises(PushError) as caught:
        engine_at(server).push("127.0.0.1:5000/team/site", "abc", {"username": "u"})
    error = caught.value
    if fault in ("silent", "stall"):
        # Nothing for that long is what a registry that stopped taking the upload looks like
        # to the engine's client: a retry is worth it.
        assert isinstance(error, RegistryUnreachableError)
        assert error.exit_code == ExitCode.REGISTRY_UNREACHABLE
        assert f"no progress for {CLIENT_TIMEOUT} s" in error.message
        assert "127.0.0.1:5000/team/site:abc" in error.message
        assert is_retryable(error)
    else:
        assert type(error) is PushError
        assert error.exit_code == ExitCode.PUSH
        assert error.message.startswith(f"lost the Docker engine at {server.url}")
        assert not is_retryable(error)
    assert error.hint


# -- the real engine -----------------------------------------------------------------------


def import_unique_image(reference: str) -> None:
    """A one-file image whose only layer no registry holds yet."""
    subprocess.run(
        ["docker", "import", "-", reference],
        input=tar_of("etc/shipit-unique", uuid.uuid4().hex.encode()),
        capture_output=True,
        check=True,
    )


def test_push_to_a_registry_that_stalls_every_upload_is_a_retryable_error(
    engine: Engine,
) -> None:
    impatient = Engine.connect(timeout=3)
    with (
        RegistryService(auth="none") as registry,
        FaultProxy("127.0.0.1", registry.port) as proxy,
    ):
        repository = f"{proxy.host}/stall/{uuid.uuid4().hex[:10]}"
        import_unique_image(f"{repository}:1")
        try:
            proxy.set_mode("slow", delay=600, match=r"^(POST|PATCH|PUT) /v2/.*/blobs/uploads/")
            with pytest.raises(RegistryUnreachableError) as caught:
                impatient.push(repository, "1", None)
            assert proxy.seen("slow"), "the upload never reached the registry"
        finally:
            subprocess.run(["docker", "rmi", f"{repository}:1"], capture_output=True, check=False)
    error = caught.value
    assert f"{repository}:1 made no progress for 3 s" in error.message
    assert is_retryable(error)
    assert error.exit_code == ExitCode.REGISTRY_UNREACHABLE


class RefusingEngine(HttpService):
    """An engine that answers its ping and version, then refuses every other call with a
    500, as a broken or overloaded dockerd does."""

    def __init__(self) -> None:
        super().__init__(name="refusing-engine")

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        if length:
            request.rfile.read(length)
        path = request.path.split("?")[0]
        if path.endswith("/_ping"):
            status, body = 200, b"OK"
        elif path.endswith("/version"):
            status, body = 200, json.dumps({"Version": "26.1.5", "ApiVersion": "1.45"}).encode()
        else:
            status, body = 500, json.dumps({"message": "engine is broken"}).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


REFUSED_COMMANDS = [
    ("build",),
    ("run",),
    ("stop",),
    ("smoke",),
    ("push", "--to", "dockerhub"),
    ("push", "--to", "dockerhub", "--skip-smoke"),
    ("ship", "--to", "dockerhub"),
]


@pytest.mark.parametrize("command", REFUSED_COMMANDS, ids=" ".join)
def test_an_engine_that_refuses_every_call_is_a_one_line_engine_error(
    project: Project, command: tuple[str, ...]
) -> None:
    with RefusingEngine() as server:
        env = project.env(
            DOCKER_HOST=f"tcp://{server.host}",
            SHIPIT_DOCKERHUB_REPOSITORY="team/site",
            DOCKERHUB_USERNAME="u",
            DOCKERHUB_TOKEN="t0ken-for-the-refusing-engine",
            SHIPIT_BASE_IMAGE="shipit-local/nginx:bookworm",
        )
        result = project.shipit(*command, env=env, timeout=60)
    assert result.code == ExitCode.ENGINE, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("shipit: error:"), result.stderr
    assert "engine is broken" in lines[-1]
    assert server.host in lines[-1]


def test_render_without_a_working_engine_renders_for_the_default_base(project: Project) -> None:
    with RefusingEngine() as server:
        env = project.env(DOCKER_HOST=f"tcp://{server.host}")
        del env["SHIPIT_BASE_IMAGE"]
        result = project.shipit("render", "--out", str(project.root / "out"), env=env)
    assert result.code == 0, result.output
    assert "engine is broken: rendering for nginx:1.27.3-bookworm" in result.stderr
    assert "FROM nginx:1.27.3-bookworm" in (project.root / "out" / "Dockerfile").read_text()


def test_doctor_reports_an_engine_that_refuses_every_call(project: Project) -> None:
    with RefusingEngine() as server:
        env = project.env(DOCKER_HOST=f"tcp://{server.host}")
        result = project.shipit("doctor", "--to", "dockerhub", "--json", env=env, timeout=60)
    assert result.code == ExitCode.DOCTOR, result.output
    assert "engine is broken" in result.stdout
