"""Ctrl-C (SIGINT) and a CI runner's cancel (SIGTERM) during a build: shipit exits 130 (143)
with one line, and the engine holds the same images, tags and containers as before: no new
image, no moved tag, no dangling layer, no stray container; no half-written file in .shipit/.

Each test starts the real `shipit` and signals it at a point it observes: the engine's
answer to a load that the engine has completed (held back by a relay between shipit and the
engine), or a build step that shipit reports on stderr as under way.

What a test's project owns in the engine is told apart from what other tests do meanwhile
by a base image with a layer of its own: every image built on it holds that layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.loopback import free_port
from harness.registry_reader import RegistryReader
from harness.services import RegistryService, wait_until
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import HUB_USER, Project, Result
from tests.leftovers import docker_words, engine_image_store
from tests.test_faults import (
    INTERRUPT_GRACE,
    assert_whole_or_absent,
    last_error_line,
    start_shipit,
)

pytestmark = pytest.mark.engine

# How long shipit may take to reach the point a test waits for.
REACH_TIMEOUT = 90.0
# A site file big enough that the engine's COPY of it is still under way when the step
# shows on stderr (the engine's disk writes it at a few hundred MB/s).
BIG_FILE_BYTES = 300 * 1024 * 1024


# -- what the engine holds of a project ---------------------------------------------------


@dataclass(frozen=True)
class OwnBase:
    reference: str
    image_id: str
    layer: str  # the diff id of its own layer


@pytest.fixture(scope="module")
def own_base(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBase]:
    """The local nginx base with one more layer, a file nobody else has."""
    folder = tmp_path_factory.mktemp("own-base")
    (folder / "marker").write_text(uuid.uuid4().hex)
    (folder / "Dockerfile").write_text(
        "FROM shipit-local/nginx:bookworm\nCOPY marker /etc/shipit-test-marker\n"
    )
    reference = f"shipit-test/interrupt-base-{uuid.uuid4().hex[:10]}:1"
    subprocess.run(
        ["docker", "build", "-q", "-t", reference, str(folder)], capture_output=True, check=True
    )
    info = engine.image(reference)
    assert info is not None
    base = OwnBase(reference, info.id, info.layers[-1])
    yield base
    # What the whole builds left on it (their steps, which the containerd store's engine
    # keeps after their image is removed), the newest first, then the base.
    made = _inspect("image", list(engine_state(base).images))
    newest_first = sorted(made, key=lambda image: str(image["Created"]), reverse=True)
    for image_id in [*(str(image["Id"]) for image in newest_first), base.image_id]:
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)


def _inspect(kind: str, ids: list[str]) -> list[dict[str, Any]]:
    """`docker inspect` of the ids that still exist (other tests remove theirs meanwhile)."""
    if not ids:
        return []
    found = subprocess.run(
        ["docker", kind, "inspect", *ids], capture_output=True, text=True, check=False
    )
    return list(json.loads(found.stdout or "[]"))


@dataclass(frozen=True)
class EngineState:
    images: dict[str, tuple[str, ...]]  # id: its tags, for every image on the base
    dangling: frozenset[str]
    containers: frozenset[str]


def engine_state(base: OwnBase) -> EngineState:
    ids = sorted(set(docker_words("images", "-aq", "--no-trunc")))
    images = {
        str(image["Id"]): tuple(sorted(image.get("RepoTags") or ()))
        for image in _inspect("image", ids)
        if base.layer in (image.get("RootFS") or {}).get("Layers", ())
        and image["Id"] != base.image_id
    }
    dangling = frozenset(docker_words("images", "-q", "--no-trunc", "--filter", "dangling=true"))
    containers = frozenset(
        str(container["Id"])
        for container in _inspect("container", docker_words("ps", "-aq", "--no-trunc"))
        if container.get("Image") in images or container.get("Image") == base.image_id
    )
    return EngineState(images, dangling & images.keys(), containers)


def assert_state_folder_whole(project: Project) -> None:
    """Only shipit's own files: nothing half-written (a temporary file) is left."""
    state = project.root / ".shipit"
    names = sorted(path.name for path in state.iterdir()) if state.is_dir() else []
    partial = [name for name in names if name.startswith(".") and name != ".gitignore"]
    assert partial == [], names
    assert not [name for name in names if name.endswith(".tmp")], names


# -- shipit in the background, watched through its stderr ---------------------------------


@dataclass
class Watched:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def said(self, *texts: str) -> bool:
        """Whether stderr has a line with each text, in this order."""
        at = 0
        for text in texts:
            at = next((i for i in range(at, len(self.lines)) if text in self.lines[i]), -1)
            if at < 0:
                return False
        return True

    def signal_when(
        self,
        ready: Callable[[], bool],
        what: str,
        signum: int,
        then: Callable[[], None] = lambda: None,
    ) -> Result:
        """`signum` as soon as `ready()`, then `then()`; shipit must end within
        INTERRUPT_GRACE s."""
        wait_until(lambda: ready() or self.proc.poll() is not None, REACH_TIMEOUT, what=what)
        assert self.proc.poll() is None, f"shipit ended first:\n{''.join(self.lines)}"
        self.proc.send_signal(signum)
        then()
        try:
            self.proc.wait(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            pytest.fail(f"still running {INTERRUPT_GRACE:g} s after the signal: killed")
        self._reader.join(timeout=30)
        assert self.proc.stdout is not None
        return Result(self.proc.returncode, self.proc.stdout.read(), "".join(self.lines))


def watched(project: Project, args: list[str], env: dict[str, str]) -> Watched:
    return Watched(start_shipit(project, args, env))


# -- a relay between shipit and the engine that holds back the answer to a load -----------


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), f"the relay needs a local engine, not {host}"
    return host.removeprefix("unix://")


class LoadRelay:
    """A unix socket that passes everything to the engine and back, except that once armed,
    the answer to `POST .../images/load` is kept until `release()`: the engine has loaded
    the image while shipit still waits to hear so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = bytearray()
        self._armed = threading.Event()
        self._released = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def arm(self) -> None:
        self._armed.set()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(engine_socket())
            loading = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, loading), daemon=True).start()
            threading.Thread(
                target=self._down, args=(upstream, client, loading), daemon=True
            ).start()

    def _up(self, client: socket.socket, upstream: socket.socket, loading: threading.Event) -> None:
        while data := _recv(client):
            if self._armed.is_set() and data.startswith(b"POST ") and b"/images/load" in data:
                loading.set()
            if not _send(upstream, data):
                break
        _shut(upstream)

    def _down(
        self, upstream: socket.socket, client: socket.socket, loading: threading.Event
    ) -> None:
        # A short timeout, so that what is held goes out when released, not at the next byte.
        upstream.settimeout(0.05)
        with client, upstream:
            while True:
                try:
                    data: bytes | None = upstream.recv(1 << 16)
                except TimeoutError:
                    data = None
                except OSError:
                    data = b""
                if loading.is_set() and not self._released.is_set():
                    if not data and data is not None:
                        self._released.wait()  # the engine said all; shipit hears it later
                    else:
                        self.held += data or b""
                        continue
                if self.held and loading.is_set():
                    _send(client, bytes(self.held))
                    self.held.clear()
                if data is None:
                    continue
                if not data or not _send(client, data):
                    break
            _shut(client)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


@pytest.fixture
def load_relay(tmp_path: Path) -> Iterator[LoadRelay]:
    relay = LoadRelay(tmp_path / "engine.sock")
    yield relay
    relay.close()


# -- projects ---------------------------------------------------------------------------


def on_base(project: Project, base: OwnBase, **extra: str) -> dict[str, str]:
    return project.env(SHIPIT_BASE_IMAGE=base.reference, SHIPIT_PORT=str(free_port()), **extra)


def edit_site(project: Project) -> None:
    with project.site_toml.open("a") as data:
        data.write(f'\ninterrupt_nonce = "{uuid.uuid4().hex}"\n')


def built_before(project: Project, env: dict[str, str]) -> str:
    """A whole build first, so that `latest` names an image the interrupted build must not
    take it from; then an edit, so that the next build makes a new image."""
    result = project.shipit("build", env=env)
    assert result.code == 0, result.output
    latest = docker_words("image", "inspect", "--format", "{{.Id}}", f"{project.image}:latest")
    edit_site(project)
    return latest[0]


def sleeping_build(project: Project) -> None:
    """A Dockerfile that shipit cannot write itself: docker build runs it, and its last step
    sleeps until it is cancelled."""
    dockerfile = project.root / "templates" / "Dockerfile.j2"
    dockerfile.write_text(dockerfile.read_text() + "RUN sleep 600\n")


def big_site_file(project: Project) -> None:
    with (project.root / "site" / "static" / "big.bin").open("wb") as big:
        big.truncate(BIG_FILE_BYTES)


def image_exists(image_id: str) -> bool:
    inspected = subprocess.run(
        ["docker", "image", "inspect", image_id], capture_output=True, check=False
    )
    return inspected.returncode == 0


def step_result(result: Result, step: str) -> str | None:
    """The id of the image a docker build step made, as its stream (shipit's stderr) says."""
    lines = result.stderr.splitlines()
    at = next((i for i, line in enumerate(lines) if step in line), None)
    if at is None:
        return None
    for line in lines[at + 1 :]:
        if line.startswith("Step "):
            return None
        words = line.split()
        if len(words) == 2 and words[0] == "--->":
            return words[1]
    return None


def assert_stopped(result: Result, code: ExitCode, said: str) -> None:
    assert result.code == code, result.output
    assert last_error_line(result) == f"shipit: error: {said}: nothing was built or tagged", (
        result.output
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("shipit: error:")]
    assert len(errors) == 1, result.output


def assert_unchanged(before: EngineState, base: OwnBase, project: Project, latest: str) -> None:
    after = engine_state(base)
    assert after.images == before.images
    assert after.dangling == before.dangling
    assert after.containers == before.containers
    now = docker_words("image", "inspect", "--format", "{{.Id}}", f"{project.image}:latest")
    assert now == [latest]
    assert_state_folder_whole(project)


# -- shipit's own image writer: the archive loaded into the engine ------------------------


def test_sigint_after_the_engine_loaded_the_image_removes_it_and_moves_no_tag(
    engine: Engine, project: Project, own_base: OwnBase, load_relay: LoadRelay
) -> None:
    if engine_image_store() == "containerd":
        pytest.skip("an engine with the containerd image store builds with docker build")
    env = on_base(project, own_base, DOCKER_HOST=load_relay.docker_host)
    latest = built_before(project, env)
    before = engine_state(own_base)
    load_relay.arm()
    shipit = watched(project, ["build"], env)
    result = shipit.signal_when(
        lambda: b"Loaded image" in load_relay.held,
        "the engine to answer the load",
        signal.SIGINT,
        then=load_relay.release,
    )
    assert shipit.said("writing ")
    assert_unchanged(before, own_base, project, latest)
    assert_stopped(result, ExitCode.INTERRUPTED, "interrupted")


# -- docker build, for a Dockerfile with RUN ----------------------------------------------


def interrupted_in_a_run_step(
    project: Project,
    own_base: OwnBase,
    argv: list[str],
    sent: signal.Signals,
    env: dict[str, str],
) -> Result:
    """`shipit ARGV`, signalled once the docker build's `RUN sleep 600` runs, and the engine
    checked to be as it was before."""
    latest = built_before(project, env)
    sleeping_build(project)
    before = engine_state(own_base)
    shipit = watched(project, argv, env)
    result = shipit.signal_when(
        lambda: shipit.said("RUN sleep 600", "Running in "), "the RUN step to start", sent
    )
    assert_unchanged(before, own_base, project, latest)
    return result


def test_sigint_during_a_run_step_cancels_the_build_and_leaves_no_layer(
    engine: Engine, project: Project, own_base: OwnBase
) -> None:
    env = on_base(project, own_base)
    result = interrupted_in_a_run_step(project, own_base, ["build"], signal.SIGINT, env)
    assert_stopped(result, ExitCode.INTERRUPTED, "interrupted")


def test_sigterm_during_a_big_copy_waits_for_it_and_removes_its_layer(
    engine: Engine, project: Project, own_base: OwnBase
) -> None:
    env = on_base(project, own_base)
    latest = built_before(project, env)
    sleeping_build(project)
    big_site_file(project)
    before = engine_state(own_base)
    shipit = watched(project, ["build"], env)
    result = shipit.signal_when(
        lambda: shipit.said("COPY shipit/ /srv/shipit/"), "the COPY step to start", signal.SIGTERM
    )
    # The classic store's engine ends a COPY under way, cancelled or not, and makes its
    # layer: shipit must hear of it (or the layer appears after shipit is gone, when nothing
    # shows) and remove it. The containerd store's engine drops the COPY instead.
    copied = step_result(result, "COPY shipit/ /srv/shipit/")
    if engine_image_store() == "classic":
        assert copied is not None, f"shipit did not wait for the COPY to end:\n{result.output}"
    assert copied is None or not image_exists(copied), f"the COPY's layer {copied} is left"
    assert_unchanged(before, own_base, project, latest)
    assert_stopped(result, ExitCode.TERMINATED, "terminated (SIGTERM)")


def test_sigterm_during_the_build_of_a_run_leaves_no_container(
    engine: Engine, project: Project, own_base: OwnBase
) -> None:
    env = on_base(project, own_base)
    result = interrupted_in_a_run_step(project, own_base, ["run"], signal.SIGTERM, env)
    assert_stopped(result, ExitCode.TERMINATED, "terminated (SIGTERM)")


def test_sigint_during_the_build_of_a_ship_pushes_nothing(
    engine: Engine,
    project: Project,
    own_base: OwnBase,
    hub_registry: RegistryService,
    hub_token: str,
) -> None:
    repository = f"interrupt/{project.image.rsplit('/', 1)[-1]}"
    env = on_base(
        project,
        own_base,
        SHIPIT_DOCKERHUB_REGISTRY=hub_registry.host,
        SHIPIT_DOCKERHUB_REPOSITORY=repository,
        DOCKERHUB_USERNAME=HUB_USER,
        DOCKERHUB_TOKEN=hub_token,
    )
    argv = ["ship", "--to", "dockerhub"]
    result = interrupted_in_a_run_step(project, own_base, argv, signal.SIGINT, env)
    assert_stopped(result, ExitCode.INTERRUPTED, "interrupted")
    with RegistryReader(hub_registry.host, HUB_USER, hub_token) as hub:
        assert assert_whole_or_absent(hub, repository) == {}
