"""The README's install line for a clone, run as written in a fresh clone of this checkout:
pipx builds shipit-site from it, and the `shipit` it puts on PATH works. pipx is the way
Debian 12 users install a command (its own Python refuses `pip install` outside a venv)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def clone_install_line(readme: str) -> str:
    install = readme.split("\n## Install", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in install.splitlines()]
    (line,) = [line for line in lines if line.startswith("pipx install") and line.endswith(" .")]
    return line


def test_the_readme_s_pipx_line_installs_a_working_shipit_from_a_clone(tmp_path: Path) -> None:
    line = clone_install_line((REPO / "README.md").read_text(encoding="utf-8"))
    clone = tmp_path / "shipit"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    bin_dir = tmp_path / "bin"
    env = {
        **os.environ,
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(bin_dir),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
        "PIPX_DEFAULT_PYTHON": sys.executable,
        # pipx comes with the dev extra, beside the interpreter running the tests.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PYTHONPATH", None)
    installed = subprocess.run(
        shlex.split(line),
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "shipit-site" in installed.stdout + installed.stderr

    shipit = bin_dir / "shipit"
    version = subprocess.run(
        [str(shipit), "--version"], env=env, capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("shipit 0."), version.stdout
    assert "unknown" not in version.stdout.split("+", 1)[0], version.stdout
    made = subprocess.run(
        [str(shipit), "init", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert (tmp_path / "demo" / "shipit.toml").is_file()
