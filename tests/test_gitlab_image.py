"""The GitLab job's image can run the job's before_script with the git install spec that
`shipit init` writes, and gives shipit a git for the commit it tags.

No image can be pulled here, so the template's image is stood in for by one made from Debian
packages with what that Docker official image holds that matters to the job: its Debian
release, whether git is there, and a Python whose pip installs into it. python:X-bookworm is
built FROM buildpack-deps:bookworm, whose -scm layer installs git and openssh-client;
python:X-slim-bookworm is debian:bookworm-slim with Python, ca-certificates and no git.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from shipit import __version__
from shipit.engine import Engine
from tests.conftest import REPO
from tests.test_init_ci import init

HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PYTHON = ("ca-certificates", "python3", "python3-pip", "python-is-python3")
STAND_INS = {
    "python:3.12-bookworm": (*PYTHON, "git", "openssh-client"),
    "python:3.12-slim-bookworm": PYTHON,
}


def stand_in(image: str, tmp_path: Path) -> str:
    """A local image with the packages that matter of `image`; kept between runs."""
    assert image in STAND_INS, f"no stand-in for {image}: add its packages to STAND_INS"
    packages = STAND_INS[image]
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    name = f"shipit-test/gitlab-job:{key}"
    known = subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False)
    if known.returncode == 0:
        return name
    rootfs = tmp_path / "rootfs"
    built = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            "bookworm",
            str(rootfs),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"debootstrap of a stand-in for {image} failed: {built.stdout[-2000:]}")
    # The official image's Python is its own build in /usr/local, which pip installs into;
    # Debian's marks itself externally managed.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    subprocess.run(
        f"tar -C {shlex.quote(str(rootfs))} -c . | docker import - {name}",
        shell=True,
        capture_output=True,
        check=True,
    )
    subprocess.run(["rm", "-rf", str(rootfs)], check=True)
    return name


def test_the_job_image_installs_shipit_from_git_and_has_git(engine: Engine, tmp_path: Path) -> None:
    done = init(
        tmp_path,
        "site",
        "--ci",
        "gitlab",
        "--install",
        "git+https://github.com/acme/shipit@0123456789abcdef0123456789abcdef01234567",
    )
    assert done.returncode == 0, done.stderr
    pipeline = yaml.safe_load((tmp_path / "site" / ".gitlab-ci.yml").read_text())
    image = pipeline["default"]["image"]
    before_script = pipeline["default"]["before_script"]
    assert pipeline["variables"]["SHIPIT_INSTALL"].startswith("git+https://")

    # The same kind of spec, a git URL pinned to a commit, from a repository on this machine.
    remote = tmp_path / "shipit.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(REPO), str(remote)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    # GitLab runs before_script and script in one shell that stops at the first failure.
    job = "set -e\n" + "\n".join([*before_script, "shipit --version", "git --version"])
    ran = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{remote}:/remote/shipit.git:ro",
            "-e",
            f"SHIPIT_INSTALL=git+file:///remote/shipit.git@{commit}",
            # This machine reaches PyPI through a TLS proxy whose CA only its own bundle holds.
            "-v",
            f"{HOST_CA_BUNDLE}:/etc/ssl/certs/host-ca.crt:ro",
            "-e",
            "PIP_CERT=/etc/ssl/certs/host-ca.crt",
            stand_in(image, tmp_path),
            "bash",
            "-c",
            job,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, f"{image}: {output[-3000:]}"
    lines = ran.stdout.splitlines()
    assert f"shipit {__version__}" in lines, output[-3000:]
    assert any(line.startswith("git version ") for line in lines), output[-3000:]
