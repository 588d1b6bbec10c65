"""The two engines the bench drives with the docker CLI: this machine's classic one, and the
containerd-store engine that scripts/engines.sh starts (Docker 26, in the network namespace
shipit-ctrd, at unix:///run/shipit-ctrd.sock), on which buildx builds several platforms."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Literal

from bench.netns import NamespaceUnavailable, NetworkNamespace

Engine = Literal["classic", "containerd"]
# As scripts/engines.sh names them.
CONTAINERD_NETNS = "shipit-ctrd"
CONTAINERD_HOST = "unix:///run/shipit-ctrd.sock"
BUILDX_VERSION = "0.13.1"
ENGINES_HINT = "run scripts/engines.sh up containerd and scripts/engines.sh up buildx (as root)"


def engine_env(engine: Engine) -> dict[str, str] | None:
    """The environment for a docker CLI of `engine` (None: this process's own)."""
    if engine == "classic":
        return None
    return {**os.environ, "DOCKER_HOST": CONTAINERD_HOST}


def docker(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], env=engine_env(engine), capture_output=True, text=True, check=False
    )


def remove_named(engine: Engine, ours: Callable[[str], bool]) -> None:
    """Removes every tag and digest reference of `engine` whose repository `ours` accepts."""
    listed = docker(
        engine, "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"
    )
    names = set()
    for line in listed.stdout.splitlines():
        repository, tag, digest = [*line.split(), "", "", ""][:3]
        if not ours(repository):
            continue
        if tag not in ("", "<none>"):
            names.add(f"{repository}:{tag}")
        if digest.startswith("sha256:"):
            names.add(f"{repository}@{digest}")
    if names:
        docker(engine, "rmi", *sorted(names))


def containerd_namespace(failure: type[Exception]) -> NetworkNamespace:
    """The containerd-store engine's namespace, once the engine answers with that image store
    and buildx is the version the bench compares with."""
    info = docker("containerd", "info", "--format", "{{json .DriverStatus}}")
    if info.returncode != 0 or "io.containerd.snapshotter" not in info.stdout:
        answer = info.stderr.strip() or info.stdout.strip()
        raise failure(f"no containerd-store engine at {CONTAINERD_HOST} ({answer}): {ENGINES_HINT}")
    version = docker("containerd", "buildx", "version")
    if f" {BUILDX_VERSION}" not in version.stdout:
        raise failure(f"docker buildx {BUILDX_VERSION} is not installed: {ENGINES_HINT}")
    try:
        return NetworkNamespace(CONTAINERD_NETNS)
    except NamespaceUnavailable as error:
        raise failure(str(error)) from error


def buildx_plugin(failure: type[Exception]) -> str:
    """The docker-buildx plugin's path, which a private DOCKER_CONFIG must list."""
    listed = docker(
        "classic", "info", "--format", "{{range .ClientInfo.Plugins}}{{.Name}} {{.Path}}\n{{end}}"
    )
    for line in listed.stdout.splitlines():
        name, _, path = line.partition(" ")
        if name == "buildx" and path:
            return os.path.realpath(path)
    raise failure(f"the docker CLI lists no buildx plugin: {ENGINES_HINT}")


# Build cache records of the containerd-store engine: the bench prunes the ones it added.


class BuildCacheUnreadable(RuntimeError):
    """The engine did not list its build cache: nothing can be told apart, nothing is pruned."""


def build_cache_ids() -> set[str]:
    listed = docker("containerd", "system", "df", "-v", "--format", "{{json .BuildCache}}")
    try:
        if listed.returncode != 0:
            raise ValueError(listed.stderr.strip())
        records = json.loads(listed.stdout or "[]")
        return {str(record["ID"]) for record in records or []}
    except (ValueError, KeyError, TypeError) as error:
        raise BuildCacheUnreadable(
            f"the containerd-store engine did not list its build cache: {error}"
        ) from error


def prune_added_build_cache(before: set[str]) -> None:
    """Prunes the records that are not in `before` (one per call: the engine takes one id
    filter at a time), children before parents over a few passes; a record that an image
    in the store shares stays."""
    left = build_cache_ids() - before
    for _ in range(3):
        for record in sorted(left):
            docker("containerd", "builder", "prune", "-f", "--filter", f"id={record}")
        remaining = left & build_cache_ids()
        if remaining == left:
            break
        left = remaining
