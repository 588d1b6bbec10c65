"""A project folder shipit cannot write (a read-only checkout or mount): one line naming the
folder, exit 17, nothing left behind. The tests run as root, which ignores permission bits,
so the project is a read-only bind mount of the example's copy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.services import free_port
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import Project, shipit_containers


@pytest.fixture
def read_only(project: Project, tmp_path: Path) -> Iterator[Project]:
    mount_point = tmp_path / "read-only"
    mount_point.mkdir()
    subprocess.run(["mount", "--bind", str(project.root), str(mount_point)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount_point)], check=True)
        yield Project(root=mount_point, image=project.image)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def the_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("shipit: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_render_names_the_output_folder_it_cannot_write(read_only: Project, tmp_path: Path) -> None:
    result = read_only.shipit("render")
    assert result.code == ExitCode.NOT_WRITABLE == 17, result.output
    assert result.stderr.strip().splitlines() == [
        "shipit: error: cannot write the render output .shipit/context: Read-only file system; "
        "make that folder writable, or write the build context elsewhere with --out DIR"
    ]
    elsewhere = read_only.shipit("render", "--out", str(tmp_path / "context"))
    assert elsewhere.code == 0, elsewhere.output
    assert (tmp_path / "context" / "Dockerfile").is_file()


@pytest.mark.parametrize("command", [["run"], ["ship", "--to", "dockerhub"]])
def test_run_and_ship_name_the_state_folder_and_leave_no_container(
    engine: Engine, read_only: Project, command: list[str]
) -> None:
    env = read_only.env(SHIPIT_PORT=str(free_port()))
    result = read_only.shipit(*command, env=env)
    assert result.code == ExitCode.NOT_WRITABLE, result.output
    assert the_error(result.stderr) == (
        f"shipit: error: cannot write shipit's state folder {read_only.root / '.shipit'}: "
        "Read-only file system; make the project folder writable: shipit records the smoke "
        "pass there, and push needs it"
    )
    assert shipit_containers(read_only.image) == []
