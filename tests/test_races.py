"""Crashes and races: a ship killed with SIGKILL at a phase boundary and then run again, two
shipit commands on one project at once, two first pushes to one new ECR repository.

A kill -9 leaves behind whatever the dead process had made. The next command must clean up
what it can tell is abandoned (the project's container, the push's temporary folder in the
blob store) and leave both registries serving the same, right digest. Each scenario has its
own blob store (XDG_CACHE_HOME), so the push folders it sees are its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any

import boto3
import pytest
import requests

from harness.loopback import HttpService
from harness.services import AWS_ENV_CLEARED, MotoService, moto_ecr_password, wait_until
from shipit.aws import AwsSession
from shipit.config import load_settings
from shipit.errors import ExitCode, ProjectBusyError
from shipit.lock import LOCK_FILE, project_lock
from shipit.push.blobs import PUSH_LOCK, BlobStore
from shipit.registries.ecr import Ecr
from tests.conftest import PublishProject, Result, shipit_containers
from tests.leftovers import running_containers_of, shipit_uploads
from tests.test_publish import ecr_client, served_digest, served_image_ids

SHIP_DEADLINE = 240.0  # seconds a ship may take on this 2-core machine before a test fails


# -- shipit in the background, its stderr read as it comes ------------------------------


@dataclass
class Background:
    """A `python -m shipit ...` process; its stderr lines are collected while it runs."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, project: PublishProject, args: list[str], env: dict[str, str]) -> Background:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipit", *args],
            env=env,
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = cls(proc)
        assert proc.stdout is not None and proc.stderr is not None
        for stream, into in ((proc.stderr, started.lines), (proc.stdout, started.stdout)):
            reader = threading.Thread(target=_collect, args=(stream, into), daemon=True)
            reader.start()
            started._readers.append(reader)
        return started

    def saw(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in list(self.lines))

    def wait_for_line(self, pattern: str, what: str) -> None:
        wait_until(
            lambda: self.saw(pattern) or self.proc.poll() is not None, SHIP_DEADLINE, what=what
        )
        assert self.saw(pattern), f"shipit ended before {what}:\n{self.output()}"

    def kill(self) -> None:
        assert self.proc.poll() is None, f"shipit had already ended:\n{self.output()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = SHIP_DEADLINE) -> Result:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return Result(self.proc.returncode, "".join(self.stdout), "".join(self.lines))

    def output(self) -> str:
        return "".join(self.lines)


def _collect(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)


@contextlib.contextmanager
def in_background(
    project: PublishProject, args: list[str], env: dict[str, str]
) -> Iterator[Background]:
    started = Background.start(project, args, env)
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                started.proc.send_signal(signal.SIGCONT)  # a stopped one cannot die otherwise
            started.proc.kill()
        started.finish(timeout=30)


# -- what a ship must leave -------------------------------------------------------------


def scenario_env(project: PublishProject, tmp_path: Path) -> dict[str, str]:
    """One port and one blob store for the killed ship and its re-run."""
    return project.env(XDG_CACHE_HOME=str(tmp_path / "cache"))


def push_folders(env: dict[str, str]) -> set[Path]:
    store = Path(env["XDG_CACHE_HOME"]) / "shipit" / "blobs"
    return set(store.glob("push-*")) if store.is_dir() else set()


def smoke_pass(project: PublishProject) -> dict[str, Any] | None:
    state = project.root / ".shipit" / "state.json"
    try:
        passed = json.loads(state.read_text())["smoke_passed"]
    except (OSError, ValueError, KeyError):
        return None
    assert isinstance(passed, dict)
    return passed


def assert_shipped(project: PublishProject, result: Result) -> dict[str, Any]:
    """Exit 0, both registries serve the manifest the report names for every tag, the image
    built is the one served, and no container of the project is left."""
    assert result.code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert project.ecr and project.hub
    image_id = report["build"]["image_id"]
    digests = {entry["registry"]: entry["digest"] for entry in report["push"]["registries"]}
    assert digests["ecr"] == digests["dockerhub"] and digests["ecr"].startswith("sha256:")
    places = (
        (project.ecr.host, "AWS", moto_ecr_password(), project.ecr_repository),
        (project.hub.host, project.hub.username or "", project.hub_token, project.hub_repository),
    )
    for tag in report["push"]["tags"]:
        for host, user, password, repository in places:
            assert served_digest(host, user, password, repository, tag) == digests["ecr"]
            assert image_id in served_image_ids(host, user, password, repository, tag)
    assert shipit_containers(project.image) == []
    return report


def rerun_after_kill(project: PublishProject, env: dict[str, str]) -> dict[str, Any]:
    left = push_folders(env)
    report = assert_shipped(project, project.shipit("ship", "--json", env=env))
    assert not left & push_folders(env), "the killed push's folder is still in the blob store"
    return report


# -- a Docker engine socket that loses one request ---------------------------------------


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), f"these tests need a local engine, not {host}"
    return host.removeprefix("unix://")


class LosingEngine:
    """A unix socket in front of the engine's that forwards every byte both ways, except a
    request matching `lose`: that one never reaches the engine (and `lost` is set), as if
    the process that sent it had been killed a moment earlier."""

    def __init__(self, path: Path, lose: bytes) -> None:
        self.path = path
        self._lose = re.compile(lose)
        self.lost = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sockets: list[socket.socket] = []
        self._guard = threading.Lock()

    @property
    def address(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> LosingEngine:
        self._listener.bind(str(self.path))
        self._listener.listen(32)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._guard:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(engine_socket())
            with self._guard:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests_: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if requests_ and self._lose.search(chunk):
                    self.lost.set()
                    while source.recv(65536):  # until the client goes
                        pass
                    break
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# -- kill -9 at each phase boundary, then ship again --------------------------------------


def test_a_ship_killed_after_the_build_is_completed_by_the_next_ship(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    env = scenario_env(project, tmp_path)
    with in_background(project, ["ship"], env) as killed:
        killed.wait_for_line(r"^starting shipit-", "the build to end and the run to start")
        killed.kill()
    rerun_after_kill(project, env)


def test_a_ship_killed_after_its_smoke_pass_leaves_no_container_after_the_next_ship(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    """The pass is recorded, the container not yet removed: the next ship reuses the pass
    and must still remove the container."""
    project = publish_project
    env = scenario_env(project, tmp_path)
    # A first build asks the base image once whether its nginx has gzip_static, with a
    # container it creates and removes: built before, so the ship's first removal is the
    # site's container after the smoke test.
    built = project.shipit("build", env=env)
    assert built.code == 0, built.output
    losing = LosingEngine(tmp_path / "engine.sock", rb"^DELETE /[^ ]*containers/")
    with losing, in_background(project, ["ship"], {**env, "DOCKER_HOST": losing.address}) as killed:
        wait_until(
            lambda: losing.lost.is_set() or killed.proc.poll() is not None,
            SHIP_DEADLINE,
            what="the ship to remove its container after the smoke test",
        )
        assert losing.lost.is_set(), killed.output()
        killed.kill()
    passed = smoke_pass(project)
    assert passed is not None
    assert running_containers_of(project.image), "the kill should have left the container"
    report = rerun_after_kill(project, env)
    assert report["smoke_reused"]["image_id"] == passed["image_id"]
    assert report["run"] is None


def test_a_ship_killed_while_it_uploads_leaves_no_push_folder_after_the_next_ship(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    """Killed once a layer is uploaded (shipit's own upload; the engine's push on the
    containerd store), with the compressed layers in the blob store's push folder."""
    project = publish_project
    env = scenario_env(project, tmp_path)
    own_upload = shipit_uploads()
    with in_background(project, ["ship"], env) as killed:
        killed.wait_for_line(
            r": uploaded layer " if own_upload else r": pushing ", "a layer upload to start"
        )
        killed.kill()
    if own_upload:
        assert push_folders(env), "the killed push should have left its folder"
    rerun_after_kill(project, env)


def test_ship_removes_the_container_that_run_left_when_it_reuses_the_smoke_pass(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    env = scenario_env(project, tmp_path)
    ran = project.shipit("run", env=env)
    assert ran.code == 0, ran.output
    assert running_containers_of(project.image)
    report = assert_shipped(project, project.shipit("ship", "--json", env=env))
    assert report["run"] is None and report["smoke_reused"] is not None


# -- two commands on one project at once ----------------------------------------------


def lock_holder(project: PublishProject) -> int | None:
    try:
        return int(json.loads((project.root / ".shipit" / LOCK_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def first_ship_building(project: PublishProject, env: dict[str, str]) -> Iterator[Background]:
    """A ship in the background, once it builds: it holds the project's lock by then."""
    with in_background(project, ["ship", "--json"], env) as first:
        first.wait_for_line(r"^(writing|building) ", "the first ship to build")
        yield first


def test_a_second_ship_of_the_project_waits_for_the_first(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    env = scenario_env(project, tmp_path)
    with first_ship_building(project, env) as first:
        holder = lock_holder(project)
        with in_background(project, ["ship", "--json"], env) as second:
            first_result = first.finish()
            second_result = second.finish()
    assert_shipped(project, first_result)
    assert holder == first.proc.pid
    report = assert_shipped(project, second_result)
    waited = [line for line in second_result.stderr.splitlines() if line.startswith("waiting for")]
    assert len(waited) == 1, second_result.stderr
    assert f"process {first.proc.pid} (shipit ship, since " in waited[0]
    assert report["smoke_reused"] is not None  # the first one's pass


def test_a_second_ship_stops_after_lock_timeout_naming_the_holder(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    env = scenario_env(project, tmp_path)
    with first_ship_building(project, env) as first:
        first.proc.send_signal(signal.SIGSTOP)  # holds the lock for as long as the test likes
        try:
            second = project.shipit("ship", "--json", env={**env, "SHIPIT_LOCK_TIMEOUT": "1"})
        finally:
            first.proc.send_signal(signal.SIGCONT)
        first_result = first.finish()
    assert second.code == ExitCode.BUSY == 16, second.output
    errors = [line for line in second.stderr.splitlines() if line.startswith("shipit: error: ")]
    assert len(errors) == 1, second.stderr
    assert f"process {first.proc.pid} (shipit ship, since " in errors[0]
    assert "after 1 s" in errors[0] and "SHIPIT_LOCK_TIMEOUT" in errors[0]
    document = json.loads(second.stdout)
    assert document["ok"] is False
    assert document["error"]["class"] == "ProjectBusyError"
    assert document["error"]["exit_code"] == 16
    assert_shipped(project, first_result)


def settings_with_lock_timeout(root: Path, seconds: float) -> Any:
    return load_settings(root, {"lock_timeout": seconds}, environ={})


_HOLD_PROJECT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from shipit.config import load_settings\n"
    "from shipit.lock import project_lock\n"
    "with project_lock(load_settings(Path(sys.argv[1]), environ={}), 'ship', print):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


@contextlib.contextmanager
def holding(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process that runs `code` (which prints `held` and waits for stdin to close)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_the_project_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    waiting: list[str] = []
    with holding(_HOLD_PROJECT, str(tmp_path)) as holder:
        started = time.monotonic()
        with (
            pytest.raises(ProjectBusyError) as busy,
            project_lock(settings_with_lock_timeout(tmp_path, 0.5), "build", waiting.append),
        ):
            pass
        assert time.monotonic() - started >= 0.5
        assert f"process {holder.pid} (shipit ship, since " in busy.value.message
        assert len(waiting) == 1 and f"process {holder.pid}" in waiting[0]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        free: list[str] = []
        no_wait = settings_with_lock_timeout(tmp_path, 0)
        # Nested, as ship's build and run take it again: no waiting for itself.
        with (
            project_lock(no_wait, "build", free.append),
            project_lock(no_wait, "run", free.append),
        ):
            holder_now = json.loads((tmp_path / ".shipit" / LOCK_FILE).read_text())
        assert free == []
        assert holder_now["pid"] == os.getpid() and holder_now["command"] == "shipit build"
        # Released: nobody reads this process's pid as the holder any more.
        assert (tmp_path / ".shipit" / LOCK_FILE).read_text() == ""
    assert (tmp_path / ".shipit" / ".gitignore").read_text() == "*\n"


def test_a_folder_that_is_not_a_project_gets_no_lock_and_no_state_folder(tmp_path: Path) -> None:
    with project_lock(settings_with_lock_timeout(tmp_path / "typo", 0), "stop", print):
        pass
    assert not (tmp_path / "typo").exists()
    with project_lock(settings_with_lock_timeout(tmp_path, 0), "stop", print):
        pass
    assert list(tmp_path.iterdir()) == []


def test_lock_timeout_is_a_setting(tmp_path: Path) -> None:
    from shipit.errors import ConfigError

    root = tmp_path
    assert load_settings(root, environ={}).lock_timeout == 600
    assert load_settings(root, environ={"SHIPIT_LOCK_TIMEOUT": "2.5"}).lock_timeout == 2.5
    with pytest.raises(ConfigError, match="SHIPIT_LOCK_TIMEOUT"):
        load_settings(root, environ={"SHIPIT_LOCK_TIMEOUT": "-1"})


# -- the blob store's push folders --------------------------------------------------------

# A push's way of saying it runs, written out: an flock on its folder's lock file.
_HOLD_FILE = (
    "import fcntl, os, sys\n"
    "descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
    "fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def is_locked(path: Path) -> bool:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def test_push_folders_of_dead_processes_go_and_running_ones_stay(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    folders = {
        name: tmp_path / f"push-{name}" for name in ("running", "killed", "young", "day-old")
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "layer-x").write_bytes(b"compressed")
    # A push folder without a lock file: an older shipit's, or a push that is just starting.
    os.utime(folders["day-old"], (1, 1))
    with holding(_HOLD_FILE, str(folders["running"] / PUSH_LOCK)):
        with holding(_HOLD_FILE, str(folders["killed"] / PUSH_LOCK)) as killed:
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
        store.forget_abandoned_pushes()
        assert sorted(p.name for p in tmp_path.glob("push-*")) == ["push-running", "push-young"]
        assert is_locked(folders["running"] / PUSH_LOCK)


# -- two first pushes to one new ECR repository -------------------------------------------


class AwsRacer(HttpService):
    """Forwards AWS requests to moto; just before a CreateRepository, creates that repository
    itself (through `ecr`, a boto3 client of moto), as a second first push would have
    between shipit's describe and its create."""

    def __init__(self, moto: MotoService, ecr: Any) -> None:
        super().__init__(name="aws-racer")
        self.moto = moto
        self.ecr = ecr
        self.raced: list[str] = []

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if request.headers.get("X-Amz-Target", "").endswith(".CreateRepository"):
            name = json.loads(body)["repositoryName"]
            self.ecr.create_repository(repositoryName=name)
            self.raced.append(name)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = requests.request(
            request.command,
            self.moto.endpoint_url + request.path,
            data=body,
            headers=headers,
            timeout=30,
        )
        request.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(answer.content)))
        request.end_headers()
        request.wfile.write(answer.content)


def test_creating_an_ecr_repository_that_another_push_just_created_returns_it(
    moto: MotoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in AWS_ENV_CLEARED:
        monkeypatch.delenv(key, raising=False)
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    name = f"race-{uuid.uuid4().hex[:10]}"
    made = boto3.client("ecr").create_repository(repositoryName=name)["repository"]
    found = Ecr(AwsSession("us-east-1")).create_repository(name, "IMMUTABLE", scan_on_push=True)
    assert found.name == name and found.uri == made["repositoryUri"]
    assert found.tag_mutability == "MUTABLE"  # the other push's choice stands


def test_a_first_push_that_loses_the_race_to_create_the_ecr_repository_pushes(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    assert project.moto is not None
    env = scenario_env(project, tmp_path)
    assert project.shipit("build", env=env).code == 0
    with AwsRacer(project.moto, ecr_client(project)) as racer:
        pushed = project.shipit(
            "push",
            "--to",
            "ecr",
            "--skip-smoke",
            "--json",
            env={**env, "AWS_ENDPOINT_URL": racer.url},
        )
    assert racer.raced == [project.ecr_repository]
    assert pushed.code == 0, pushed.output
    assert "RepositoryAlreadyExists" not in pushed.output
    entry = json.loads(pushed.stdout)["registries"][0]
    assert entry["status"] == "pushed"
    names = [
        r["repositoryName"] for r in ecr_client(project).describe_repositories()["repositories"]
    ]
    assert names.count(project.ecr_repository) == 1
