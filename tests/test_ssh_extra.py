"""paramiko comes with shipit's ssh extra only: without it, an ssh:// engine is one line that
says what to install, with the engine's exit code, and everything else works as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.remote import SSH
from shipit.errors import ExitCode
from tests.conftest import copy_example

# The console script's entry, in an interpreter where `import paramiko` fails as it does when
# the ssh extra is not installed.
WITHOUT_PARAMIKO = (
    "import sys; sys.modules['paramiko'] = None; sys.argv = ['shipit', *sys.argv[1:]]; "
    "import shipit.entry as e; sys.exit(e.main())"
)


def _shipit_without_paramiko(
    root: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SHIPIT_", "DOCKER_"))
    }
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PARAMIKO, *args],
        cwd=root,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [("run",), ("stop",), ("build",)])
def test_an_ssh_engine_without_paramiko_says_to_install_the_ssh_extra(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    root = copy_example(tmp_path / "project")
    done = _shipit_without_paramiko(root, *command, DOCKER_HOST=SSH)
    assert done.returncode == ExitCode.ENGINE, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"shipit: error: cannot reach the engine at DOCKER_HOST={SSH}: ")
    assert "pip install 'shipit-site[ssh]'" in lines[0]
    assert "pipx inject shipit-site paramiko" in lines[0]
    assert sorted(path.name for path in root.iterdir()) == ["site", "templates"]


def test_without_paramiko_other_engines_and_render_are_unaffected(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "project")
    rendered = _shipit_without_paramiko(
        root,
        "render",
        "--out",
        str(tmp_path / "context"),
        SHIPIT_BASE_IMAGE="nginx:1.27.3-bookworm",
    )
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "context" / "Dockerfile").is_file()
    unreachable = _shipit_without_paramiko(root, "stop", DOCKER_HOST="tcp://127.0.0.1:9")
    assert unreachable.returncode == ExitCode.ENGINE
    assert "paramiko" not in unreachable.stderr
    assert "nothing listens there (connection refused)" in unreachable.stderr
