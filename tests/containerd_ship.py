"""A ship of a project from the containerd-store engine, run in that engine's network namespace
(`scripts/engines.sh exec containerd python -m tests.containerd_ship ...`) by a test on the
classic engine: the suite's multi-platform base in a registry of that namespace on the port
the test names (the base's name is in the image), an htpasswd registry to ship to, and the
ship's exit code, report and stderr as one JSON document on stdout. Whatever the ship left in
the engine (the project's images, the pulled base) is removed."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

from harness.loopback import free_port
from harness.platform_base import push_platform_base
from harness.services import RegistryService
from tests.conftest import HUB_USER, Project, remove_project_leftovers, remove_pulled_from


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--platforms", required=True)
    arguments = parser.parse_args()
    token = "dckr_pat_" + secrets.token_urlsafe(24)
    project = Project(arguments.project, arguments.image)
    with (
        RegistryService(auth="none", port=arguments.base_port) as base_registry,
        RegistryService(username=HUB_USER, password=token) as hub,
    ):
        try:
            base = push_platform_base(base_registry.url)
            env = project.env(
                SHIPIT_BASE_IMAGE=base.reference,
                SHIPIT_PLATFORMS=arguments.platforms,
                SHIPIT_DOCKERHUB_REGISTRY=hub.host,
                SHIPIT_DOCKERHUB_REPOSITORY="repro/containerd",
                DOCKERHUB_USERNAME=HUB_USER,
                DOCKERHUB_TOKEN=token,
                SHIPIT_PORT=str(free_port()),
                SHIPIT_PUSH_ATTEMPTS="1",
                XDG_CACHE_HOME=str(arguments.cache),
            )
            shipped = project.shipit("ship", "--to", "dockerhub", "--json", env=env, timeout=400)
        finally:
            remove_project_leftovers(arguments.image)
            remove_pulled_from(base_registry.host)
    print(json.dumps({"code": shipped.code, "stdout": shipped.stdout, "stderr": shipped.stderr}))


if __name__ == "__main__":
    main()
