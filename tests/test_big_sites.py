"""Big sites on the real engine: a site larger than the process's memory limit builds, and
bad input (a site over the size limit, a full disk, a file written during the build) fails
with one line and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import docker
import pytest

from harness.loopback import HttpService
from shipit.engine import Engine
from shipit.errors import BuildError, ExitCode
from shipit.inputs import CHUNK_BYTES, TornFileError
from shipit.labels import LABEL_BUILD_ID
from shipit.render import render_site
from tests.conftest import Project, copy_example, remove_project_leftovers, shipit_containers
from tests.leftovers import image_references

MB = 1024 * 1024
# Address space for `shipit build` (prlimit --as): enough for the interpreter, docker-py
# and Jinja, far less than the site below.
MEMORY_LIMIT = 160 * MB


def big_file(path: Path, size: int) -> None:
    """A sparse file: quick to make, and read back as `size` bytes like any other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        stream.truncate(size)


def test_a_site_larger_than_the_memory_limit_builds(engine: Engine, project: Project) -> None:
    big_file(project.root / "site" / "static" / "video" / "big.bin", 200 * MB)
    # The limit is real: the site's bytes alone do not fit in it.
    held = subprocess.run(
        ["prlimit", f"--as={MEMORY_LIMIT}", sys.executable, "-c", f"bytearray({200 * MB})"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert held.returncode != 0 and "MemoryError" in held.stderr

    built = subprocess.run(
        ["prlimit", f"--as={MEMORY_LIMIT}", sys.executable, "-m", "shipit", "build", "--json"],
        env=project.env(),
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    report = json.loads(built.stdout)
    image = engine.image(report["image_id"])
    assert image is not None
    assert image.labels[LABEL_BUILD_ID] == report["build_id"]
    assert image.size > 200 * MB


def test_a_site_over_the_size_limit_is_refused_before_any_work(
    engine: Engine, project: Project
) -> None:
    big_file(project.root / "site" / "static" / "big.bin", 3 * MB)
    result = project.shipit("build", env=project.env(SHIPIT_MAX_SITE_SIZE="2MB"))
    assert result.code == ExitCode.TEMPLATE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "over the limit of 2.0 MB (setting max_site_size)" in lines[0]
    assert "SHIPIT_MAX_SITE_SIZE" in lines[0]
    # Nothing hashed, nothing remembered: .shipit/ holds only the project's lock, released.
    state = project.root / ".shipit"
    assert sorted(path.name for path in state.iterdir()) == [".gitignore", "lock"]
    assert (state / "lock").read_text() == ""
    assert image_references(project.image) == []


def test_a_full_disk_during_a_build_is_one_line_and_leaves_nothing(
    engine: Engine, project: Project
) -> None:
    """The project's .shipit/ on a full file system (a tmpfs in a mount namespace of this
    test's own)."""
    state = project.root / ".shipit"
    state.mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {state} && "
        f"(head -c 1M /dev/zero > {state}/filler 2>/dev/null || true) && "
        f"{sys.executable} -m shipit build; code=$?; "
        f"ls -A {state} > {project.root}/left-in-state; exit $code"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=project.env(),
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == ExitCode.BUILD, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no space left on the disk of" in lines[0] and "free some space" in lines[0]
    assert (project.root / "left-in-state").read_text().split() == ["filler"]
    assert image_references(project.image) == []
    assert shipit_containers(project.image) == []


def written_to_midway(pieces: Iterator[bytes], big: Path) -> Iterator[bytes]:
    """The pieces of an upload, with one byte of `big` (4 MiB) changed once 2 MiB are sent,
    while its fourth MiB is still to be read."""
    sent = 0
    for chunk in pieces:
        yield chunk
        sent += len(chunk)
        if 2 * CHUNK_BYTES <= sent < 2 * CHUNK_BYTES + len(chunk):
            with big.open("r+b") as stream:
                stream.seek(3 * CHUNK_BYTES)
                stream.write(b"b")


@pytest.fixture
def torn_image(engine: Engine) -> Iterator[str]:
    image = f"shipit-test/torn-{uuid.uuid4().hex[:10]}"
    yield image
    remove_project_leftovers(image)


def test_a_file_written_during_the_upload_fails_the_build_and_ships_nothing(
    engine: Engine, project: Project, torn_image: str
) -> None:
    big = project.root / "site" / "static" / "big.bin"
    big.write_bytes(b"a" * (4 * CHUNK_BYTES))
    site = render_site(project.root, "shipit-local/nginx:bookworm")

    with pytest.raises(TornFileError) as caught:
        engine.build(written_to_midway(site.tar_chunks(), big), f"{torn_image}:1")
    assert caught.value.one_line().startswith(
        "site/static/big.bin changed while shipit was reading it"
    )
    assert image_references(torn_image) == []
    # The engine dropped the unfinished context: a complete one still builds.
    whole = render_site(project.root, "shipit-local/nginx:bookworm")
    image_id = engine.build(whole.tar_chunks(), f"{torn_image}:2")
    assert image_id.startswith("sha256:")


class FullDiskEngine(HttpService):
    """A stand-in engine whose disk fills while it builds or loads: it reads the whole
    (chunked) upload, then answers with what dockerd streams when a write hits ENOSPC
    (`lines`, one JSON document each; by default a build whose COPY fails)."""

    protocol_version = "HTTP/1.1"
    BUILD_ERROR = (
        "failed to copy files: copy file range failed: write "
        "/var/lib/docker/overlay2/x/diff/srv/shipit/site/static/big.bin: "
        "no space left on device"
    )

    def __init__(self, lines: list[dict[str, object]] | None = None) -> None:
        super().__init__(name="full-disk-engine")
        self.received = 0
        self.lines = lines or [
            {"stream": "Step 7/8 : COPY shipit/ /srv/shipit/\n"},
            {"errorDetail": {"message": self.BUILD_ERROR}, "error": self.BUILD_ERROR},
        ]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        while size := int(request.rfile.readline().split(b";")[0].strip() or b"0", 16):
            self.received += len(request.rfile.read(size))
            request.rfile.readline()
        request.rfile.readline()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        for line in self.lines:  # one JSON document per chunk, as dockerd streams them
            data = json.dumps(line).encode() + b"\r\n"
            request.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        request.wfile.write(b"0\r\n\r\n")


def test_the_engine_disk_filling_during_a_build_is_one_line_that_says_so(
    tmp_path: Path,
) -> None:
    project = copy_example(tmp_path / "p")
    big_file(project / "site" / "static" / "big.bin", 3 * CHUNK_BYTES)
    site = render_site(project, "shipit-local/nginx:bookworm")
    with FullDiskEngine() as server, pytest.raises(BuildError) as caught:
        Engine(docker.APIClient(base_url=f"tcp://{server.host}", version="1.41")).build(
            site.tar_chunks(), "shipit-test/full-disk:1"
        )
    assert server.received > 3 * CHUNK_BYTES  # the context was streamed in full
    error = caught.value
    assert error.exit_code == ExitCode.BUILD
    assert "no space left on device" in error.message
    assert "disk is full" in error.hint and "docker system prune" in error.hint
    assert "\n" not in error.one_line()
