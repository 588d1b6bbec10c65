"""Shared fixtures: a real Docker engine, the local nginx base image, throwaway projects.

A missing engine or base image fails the tests (it never skips them): scripts/testenv.sh,
which `make test` runs first, installs and starts both.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.platform_base import PlatformBase, PlatformBaseMissing, push_platform_base
from harness.services import MotoService, RegistryService, free_port, moto_ecr_password
from shipit.config import LOCAL_BASE_IMAGE
from shipit.engine import Engine
from shipit.errors import EngineError
from shipit.vcs import CI_COMMIT_VARIABLES

pytest_plugins = ["tests.reliability"]
REPO = Path(__file__).resolve().parent.parent


# Fixtures that reach a Docker engine: the local one, or the remote one that
# tests/test_remote_engine.py checks for (it sets DOCKER_HOST itself, so a dead DOCKER_HOST
# does not keep it away). `-m "not engine"` leaves out every test that uses one.
ENGINE_FIXTURES = frozenset({"engine", "remote_engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        connected = Engine.connect()
    except EngineError as exc:
        pytest.fail(f"{exc.one_line()} (run scripts/testenv.sh)", pytrace=False)
    if connected.image(LOCAL_BASE_IMAGE) is None:
        pytest.fail(f"no base image {LOCAL_BASE_IMAGE}: run scripts/testenv.sh", pytrace=False)
    return connected


@dataclass
class Project:
    """A copy of the example site in a temporary folder, with its own image name."""

    root: Path
    image: str

    @property
    def site_toml(self) -> Path:
        return self.root / "site" / "site.toml"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SHIPIT_", "DOCKERHUB_", "AWS_"))
            # A run inside CI must not take the CI's commit for the test project's.
            and key not in CI_COMMIT_VARIABLES
        }
        env.update(
            SHIPIT_PROJECT=str(self.root),
            SHIPIT_IMAGE=self.image,
            SHIPIT_BASE_IMAGE=LOCAL_BASE_IMAGE,
            CI="true",
        )
        env.update(extra)
        return env

    def shipit(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
        completed = subprocess.run(
            [sys.executable, "-m", "shipit", *args],
            env=env or self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def copy_example(destination: Path) -> Path:
    for folder in ("site", "templates"):
        shutil.copytree(REPO / folder, destination / folder)
    return destination


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = copy_example(tmp_path / "site-project")
    image = f"shipit-test/{uuid.uuid4().hex[:10]}"
    yield Project(root=root, image=image)
    remove_project_leftovers(image)


def remove_project_leftovers(image: str) -> None:
    subprocess.run(
        f"docker ps -aq --filter label=io.shipit.image={image} | xargs -r docker rm -f",
        shell=True,
        capture_output=True,
        check=False,
    )
    subprocess.run(
        f"docker images -q {image} | sort -u | xargs -r docker rmi -f",
        shell=True,
        capture_output=True,
        check=False,
    )


def wait_for_the_next_second(since: float) -> None:
    """An image's labels record its build time to the second: a rebuild of the same input
    gives another image id only when it starts in a later second than `since`."""
    deadline = since + 3
    while int(time.time()) <= int(since):
        assert time.time() < deadline, "the clock did not move past the second"
        time.sleep(0.02)


def shipit_containers(image: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=io.shipit.image={image}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


# Registries and AWS: two Distribution registries with htpasswd on loopback stand in for ECR
# (user AWS, password from moto's token) and Docker Hub; moto_server answers STS and ECR.

HUB_USER = "shipit-ci"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoService]:
    with MotoService() as service:
        yield service


@pytest.fixture(scope="session")
def ecr_registry() -> Iterator[RegistryService]:
    with RegistryService(username="AWS", password=moto_ecr_password()) as registry:
        yield registry


@pytest.fixture(scope="session")
def hub_token() -> str:
    return "dckr_pat_" + secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def hub_registry(hub_token: str) -> Iterator[RegistryService]:
    with RegistryService(username=HUB_USER, password=hub_token) as registry:
        yield registry


@pytest.fixture(scope="session")
def base_registry() -> Iterator[RegistryService]:
    """A registry that anyone may pull from, as Docker Hub serves its official images. The
    engine's names for what was pulled from it go with it (its port is another each session)."""
    with RegistryService(auth="none") as registry:
        yield registry
    remove_pulled_from(registry.host)


def remove_pulled_from(host: str) -> None:
    """Removes the engine's names for what it pulled from the registry at `host`."""
    listed = subprocess.run(
        ["docker", "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    names = set()
    for line in listed.stdout.splitlines():
        repository, tag, digest = [*line.split(), "", "", ""][:3]
        if not repository.startswith(f"{host}/"):
            continue
        if tag != "<none>":
            names.add(f"{repository}:{tag}")
        if digest.startswith("sha256:"):
            names.add(f"{repository}@{digest}")
    if names:
        subprocess.run(["docker", "rmi", *sorted(names)], capture_output=True, check=False)


@pytest.fixture(scope="session")
def multi_platform_base(base_registry: RegistryService) -> PlatformBase:
    """The nginx base for linux/amd64 and linux/arm64 as one index in `base_registry`."""
    try:
        return push_platform_base(base_registry.url)
    except PlatformBaseMissing as exc:
        missing = str(exc)
    # Outside the except block: the one line, without the exception it replaces.
    pytest.fail(missing, pytrace=False)


@dataclass
class PublishProject(Project):
    ecr_repository: str = ""
    hub_repository: str = ""
    moto: MotoService | None = None
    ecr: RegistryService | None = None
    hub: RegistryService | None = None
    hub_token: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        assert self.moto and self.ecr and self.hub
        env = super().env()
        env.update(self.moto.env())
        env.update(
            SHIPIT_ECR_REPOSITORY=self.ecr_repository,
            SHIPIT_ECR_REGISTRY=self.ecr.host,
            SHIPIT_DOCKERHUB_REGISTRY=self.hub.host,
            SHIPIT_DOCKERHUB_REPOSITORY=self.hub_repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=self.hub_token,
            SHIPIT_PORT=str(free_port()),
            SHIPIT_PUSH_ATTEMPTS="2",
        )
        env.update(extra)
        return env


@pytest.fixture
def publish_project(
    engine: Engine,
    project: Project,
    moto: MotoService,
    ecr_registry: RegistryService,
    hub_registry: RegistryService,
    hub_token: str,
) -> PublishProject:
    suffix = project.image.rsplit("/", 1)[-1]
    return PublishProject(
        root=project.root,
        image=project.image,
        ecr_repository=f"site-{suffix}",
        hub_repository=f"team/site-{suffix}",
        moto=moto,
        ecr=ecr_registry,
        hub=hub_registry,
        hub_token=hub_token,
    )


@pytest.fixture(scope="module")
def tiny_base(engine: Engine) -> Iterator[str]:
    """A one-file base image: `shipit build` and `push --skip-smoke` need no nginx, and a
    push uploads a few kB, so a test can afford a registry (and a proxy) of its own."""
    reference = f"shipit-test/tiny-base-{uuid.uuid4().hex[:10]}:1"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"shipit tiny test base\n"
        info = tarfile.TarInfo("etc/shipit-tiny-base")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "import", "-", reference],
        input=buffer.getvalue(),
        capture_output=True,
        check=True,
    )
    yield reference
    subprocess.run(["docker", "rmi", reference], capture_output=True, check=False)
