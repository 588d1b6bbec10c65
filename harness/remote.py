"""The remote engine that scripts/engines.sh starts, as the tests reach it.

A dockerd in the network namespace shipit-remote, joined to this one by a veth pair:
tcp://10.251.0.2:2375 plain, tcp://10.251.0.2:2376 with TLS (client certificates in
REMOTE_CERTS). What it publishes answers on 10.251.0.2. Its own 127.0.0.1 is not this
machine's: RemoteLoopback forwards a port of its loopback to the same port here, so a
registry on 127.0.0.1:PORT has one name for the engine and for shipit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from harness.services import wait_until

REMOTE_IP = "10.251.0.2"
LOCAL_IP = "10.251.0.1"  # this namespace's end of the veth pair
REMOTE_NETNS = "/var/run/netns/shipit-remote"
PLAIN = f"tcp://{REMOTE_IP}:2375"
TLS = f"tcp://{REMOTE_IP}:2376"
REMOTE_CERTS = Path(os.environ.get("SHIPIT_TESTENV_DIR", "/var/tmp/shipit-testenv")) / (
    "remote-tls/client"
)
REMOTE_SSH = REMOTE_CERTS.parent.parent / "remote-ssh"
SSH = f"ssh://root@{REMOTE_IP}"
START_HINT = "start it with `make engines` (scripts/engines.sh up, as root)"


def plain_env() -> dict[str, str]:
    return {"DOCKER_HOST": PLAIN}


def tls_env(cert_path: Path = REMOTE_CERTS) -> dict[str, str]:
    return {"DOCKER_HOST": TLS, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}


def ssh_env(folder: Path, config: Path = REMOTE_SSH / "ssh_config") -> dict[str, str]:
    """DOCKER_HOST=ssh://..., with an `ssh` first on PATH that reads `config`: what a user's
    ~/.ssh/config does (key, known_hosts), without touching this machine's."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return {"DOCKER_HOST": SSH, "PATH": f"{folder}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def docker(engine_env: Mapping[str, str], *args: str, check: bool = True) -> str:
    """`docker ARGS` against the engine that `engine_env` names; its stdout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")
    }
    env.update(engine_env)
    done = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def containers_of(image: str) -> list[str]:
    return docker(plain_env(), "ps", "-aq", "--filter", f"label=io.shipit.image={image}").split()


def remove_leftovers(image: str) -> None:
    for container in containers_of(image):
        docker(plain_env(), "rm", "-f", container, check=False)
    for line in docker(plain_env(), "images", "-q", image).split():
        docker(plain_env(), "rmi", "-f", line, check=False)


class RemoteLoopback:
    """Makes 127.0.0.1:PORT inside the remote engine's namespace reach 127.0.0.1:PORT here,
    through this namespace's end of the veth pair (two socat forwarders)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError(f"socat not found: {START_HINT}")
        port = self.port
        commands = [
            [socat, f"TCP-LISTEN:{port},bind={LOCAL_IP},reuseaddr,fork", f"TCP:127.0.0.1:{port}"],
            [
                "nsenter",
                f"--net={REMOTE_NETNS}",
                socat,
                f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                f"TCP:{LOCAL_IP}:{port}",
            ],
        ]
        try:
            for command in commands:
                # A session of its own: socat forks a child per connection, and the
                # whole group goes when the bridge closes.
                self._processes.append(
                    subprocess.Popen(
                        command,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            wait_until(self._answers, timeout=10, interval=0.1, what=f"the bridge of port {port}")
        except BaseException:
            self.close()
            raise
        return self

    def _answers(self) -> bool:
        probe = subprocess.run(
            [
                "nsenter",
                f"--net={REMOTE_NETNS}",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://127.0.0.1:{self.port}/v2/",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return probe.stdout.strip() not in ("", "000")

    def close(self) -> None:
        for process in self._processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self._processes.clear()

    def __exit__(self, *_: object) -> None:
        self.close()
