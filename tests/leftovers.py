"""What shipit may leave behind in the Docker engine, read with the docker CLI.

(All of a project's containers: `shipit_containers` in tests/conftest.py.)
"""

from __future__ import annotations

import os
import subprocess


def docker_words(*args: str) -> list[str]:
    """What `docker ARGS` prints, split into words (ids, image references)."""
    listed = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return listed.stdout.split()


def running_containers_of(image: str) -> list[str]:
    return docker_words(
        "ps", "-q", "--filter", f"label=io.shipit.image={image}", "--filter", "status=running"
    )


def image_references(*prefixes: str) -> list[str]:
    """Local image references (repository:tag) that start with one of `prefixes`."""
    references = docker_words("images", "--format", "{{.Repository}}:{{.Tag}}")
    return [reference for reference in references if reference.startswith(prefixes)]


def engine_image_store() -> str:
    """ "containerd" or "classic": the engine's image store, as `docker info` reports it.
    The two stores' engines talk to registries differently (the containerd store's does not
    ping /v2/, and retries a failed upload fewer times)."""
    driver_status = docker_words("info", "--format", "{{json .DriverStatus}}")
    return "containerd" if "io.containerd.snapshotter" in "".join(driver_status) else "classic"


def shipit_uploads() -> bool:
    """Whether shipit uploads pushed images of the local base image itself here (a local
    engine with the classic image store), rather than the engine pushing them
    (shipit/push/publish.py). On the containerd image store shipit writes and uploads only an
    image whose base it pulled from a registry by digest: shipit_uploads_from_a_registry."""
    host = os.environ.get("DOCKER_HOST", "")
    local = not host or host.startswith("unix://")
    return (
        local
        and engine_image_store() == "classic"
        and os.environ.get("SHIPIT_UPLOADER", "auto") == "auto"
    )


def shipit_uploads_from_a_registry() -> bool:
    """Whether shipit writes and uploads an image whose base it pulled from a registry by
    digest (another platform's, or several) itself here: a local engine of either image
    store, with the default uploader."""
    host = os.environ.get("DOCKER_HOST", "")
    local = not host or host.startswith("unix://")
    return local and os.environ.get("SHIPIT_UPLOADER", "auto") == "auto"
