"""The same commit, settings and base shipped from the classic engine and from the
containerd-store engine (Docker 26 in its own network namespace, scripts/engines.sh) give the
same digest: shipit writes the image itself on both image stores, the same config, site layer
and manifest, with the base's layers as its registry holds them, and uploads it itself.

Each engine reaches registries only in its own namespace, so each ship has its own base
registry, on the same port of its own loopback: the base's name, which the image's labels
carry, is then the same, and its blobs are the same files (the suite's OCI layout)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from harness.platform_base import push_platform_base
from harness.services import RegistryService, free_port
from shipit.engine import Engine
from tests.conftest import (
    HUB_USER,
    REPO,
    Project,
    copy_example,
    remove_project_leftovers,
    remove_pulled_from,
)
from tests.leftovers import engine_image_store, shipit_uploads
from tests.test_publish import commit_all, registries, report_of

PLATFORMS = "linux/amd64,linux/arm64"


def _ship_from_the_containerd_engine(
    project: Path, image: str, base_port: int, cache: Path
) -> dict[str, object]:
    ran = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "engines.sh"),
            "exec",
            "containerd",
            sys.executable,
            "-m",
            "tests.containerd_ship",
            "--project",
            str(project),
            "--image",
            image,
            "--base-port",
            str(base_port),
            "--cache",
            str(cache),
            "--platforms",
            PLATFORMS,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    answer: dict[str, object] = json.loads(ran.stdout)
    return answer


def test_the_classic_and_the_containerd_image_store_ship_the_same_index(
    tmp_path: Path, engine: Engine, hub_registry: RegistryService, hub_token: str
) -> None:
    assert engine_image_store() == "classic" and shipit_uploads(), "run on the classic engine"
    origin = copy_example(tmp_path / "origin")
    commit_all(origin)
    image = f"shipit-test/{uuid.uuid4().hex[:10]}"
    clones = []
    for name in ("classic", "containerd"):
        folder = tmp_path / name / "site-project"
        subprocess.run(["git", "clone", "-q", str(origin), str(folder)], check=True)
        clones.append(folder)
    base_port = free_port()

    with RegistryService(auth="none", port=base_port) as base_registry:
        try:
            base = push_platform_base(base_registry.url)
            project = Project(clones[0], image)
            env = project.env(
                SHIPIT_BASE_IMAGE=base.reference,
                SHIPIT_PLATFORMS=PLATFORMS,
                SHIPIT_DOCKERHUB_REGISTRY=hub_registry.host,
                SHIPIT_DOCKERHUB_REPOSITORY=f"repro/classic-{uuid.uuid4().hex[:8]}",
                DOCKERHUB_USERNAME=HUB_USER,
                DOCKERHUB_TOKEN=hub_token,
                SHIPIT_PORT=str(free_port()),
                SHIPIT_PUSH_ATTEMPTS="1",
                XDG_CACHE_HOME=str(tmp_path / "classic" / "cache"),
            )
            classic = project.shipit("ship", "--to", "dockerhub", "--json", env=env, timeout=400)
        finally:
            remove_project_leftovers(image)
            remove_pulled_from(base_registry.host)
    assert classic.code == 0, classic.output
    on_classic = report_of(classic)

    elsewhere = _ship_from_the_containerd_engine(
        clones[1], image, base_port, tmp_path / "containerd" / "cache"
    )
    assert elsewhere["code"] == 0, elsewhere
    on_containerd = json.loads(str(elsewhere["stdout"]))

    pushed = registries(on_classic)["dockerhub"]
    again = registries(on_containerd)["dockerhub"]
    assert pushed["status"] == again["status"] == "pushed"
    assert again["digest"] == pushed["digest"], (pushed, again)
    assert "docker build" not in str(elsewhere["stderr"])
    # The containerd store names each platform's image by its manifest, the classic store
    # by its config: the same images either way.
    classic_ids = [entry["image_id"] for entry in on_classic["build"]["platforms"]]
    containerd_ids = [entry["image_id"] for entry in on_containerd["build"]["platforms"]]
    assert len(set(classic_ids + containerd_ids)) == 4
    for platform, image_id in zip(PLATFORMS.split(","), containerd_ids, strict=True):
        assert f"{platform}" in str(elsewhere["stderr"])
        assert f" is {image_id[:19]}" in str(elsewhere["stderr"])
