"""A base image read from its own registry (registries/base_source.py): the reference as
docker takes it, anonymous reads, what `docker login` stored (a temporary DOCKER_CONFIG, read
only), and one line with what to do when the registry refuses, is not there or does not
know the image."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.services import RegistryService, free_port
from shipit.errors import AuthError, ConfigError, ExitCode, RegistryUnreachableError
from shipit.registries.base_source import base_source
from shipit.registries.credentials import Credentials
from shipit.registries.distribution import RegistryClient
from shipit.registries.manifest import Descriptor, index_manifest
from tests.test_index import put_platform_image

DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG: nothing the machine's own `docker login` stored counts."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


def docker_login(folder: Path, host: str, username: str, password: str) -> bytes:
    """What `docker login host` writes to config.json, without a credential helper."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return (folder / "config.json").read_bytes()


@pytest.mark.parametrize(
    ("reference", "host", "api", "repository", "version"),
    [
        ("nginx:1.27", "docker.io", "registry-1.docker.io", "library/nginx", "1.27"),
        ("nginx", "docker.io", "registry-1.docker.io", "library/nginx", "latest"),
        ("team/site:v1", "docker.io", "registry-1.docker.io", "team/site", "v1"),
        (
            f"nginx:1.27@{DIGEST}",
            "docker.io",
            "registry-1.docker.io",
            "library/nginx",
            DIGEST,
        ),
        (
            "127.0.0.1:5000/base/nginx:bookworm",
            "127.0.0.1:5000",
            "127.0.0.1:5000",
            "base/nginx",
            "bookworm",
        ),
        ("localhost:5000/nginx", "localhost:5000", "localhost:5000", "nginx", "latest"),
    ],
)
def test_a_base_reference_names_its_registry_repository_and_version(
    docker_config: Path, reference: str, host: str, api: str, repository: str, version: str
) -> None:
    with base_source(reference) as source:
        assert (source.host, source.client.host, source.repository, source.version) == (
            host,
            api,
            repository,
            version,
        )
        assert source.anonymous


def test_a_malformed_base_reference_is_a_config_error() -> None:
    said = "base image 'Nginx' is not a valid image repository name"
    with pytest.raises(ConfigError, match=said) as raised:
        base_source("Nginx:1.27")
    assert raised.value.exit_code == ExitCode.CONFIG


@pytest.fixture(scope="module")
def open_registry() -> Iterator[RegistryService]:
    with RegistryService(auth="none") as made:
        yield made


@pytest.fixture(scope="module")
def private_registry() -> Iterator[RegistryService]:
    with RegistryService(username="reader", password="base-" + uuid.uuid4().hex) as made:
        yield made


def put_base(registry: RegistryService) -> tuple[str, list[Descriptor]]:
    """A two-platform base image in the registry: its reference and its index's entries."""
    login = Credentials(registry.username, registry.password) if registry.username else None
    repository = f"base/nginx-{uuid.uuid4().hex[:6]}"
    with RegistryClient(registry.host, login) as client:
        entries = [
            put_platform_image(client, repository, "linux", "amd64"),
            put_platform_image(client, repository, "linux", "arm64", "v8"),
        ]
        client.put_manifest(repository, "bookworm", index_manifest(entries))
    return f"{registry.host}/{repository}:bookworm", entries


def read_arm64(reference: str) -> str:
    """The architecture of the arm64 image the base's index names, read as a build would."""
    with base_source(reference) as source:
        index = source.manifest()
        assert index.is_index
        arm64 = next(e for e in index.entries() if e.platform_name == "linux/arm64/v8")
        image = source.manifest(arm64.digest)
        layer = image.layers()[0]
        with source.client.open_blob(source.repository, layer.digest, layer.size) as stream:
            assert len(stream.read()) == layer.size
        return str(source.config(image)["architecture"])


def test_a_public_base_is_read_anonymously(
    open_registry: RegistryService, docker_config: Path
) -> None:
    reference, _ = put_base(open_registry)
    with base_source(reference) as source:
        assert source.anonymous
    assert read_arm64(reference) == "arm64"


def test_a_private_base_is_read_with_what_docker_login_stored_and_nothing_is_written(
    private_registry: RegistryService, docker_config: Path
) -> None:
    assert private_registry.username and private_registry.password
    reference, _ = put_base(private_registry)
    stored = docker_login(
        docker_config, private_registry.host, private_registry.username, private_registry.password
    )
    with base_source(reference) as source:
        assert source.client.username == private_registry.username
    assert read_arm64(reference) == "arm64"
    assert sorted(path.name for path in docker_config.iterdir()) == ["config.json"]
    assert (docker_config / "config.json").read_bytes() == stored


def test_a_private_base_without_a_login_is_an_auth_error_saying_docker_login(
    private_registry: RegistryService, docker_config: Path
) -> None:
    reference, _ = put_base(private_registry)
    with pytest.raises(AuthError) as raised, base_source(reference) as source:
        source.manifest()
    assert raised.value.exit_code == ExitCode.AUTH
    assert raised.value.one_line() == (
        f"base image {reference}: registry {private_registry.host} requires credentials and "
        f"none were given (401); `docker login {private_registry.host}` (shipit reads what it "
        "stores, read only), or check the base image's name"
    )


def test_a_refused_stored_login_is_an_auth_error_without_the_password(
    private_registry: RegistryService, docker_config: Path
) -> None:
    reference, _ = put_base(private_registry)
    docker_login(docker_config, private_registry.host, "reader", "not-the-password")
    with pytest.raises(AuthError) as raised, base_source(reference) as source:
        source.manifest()
    line = raised.value.one_line()
    assert line.startswith(
        f"base image {reference}: registry {private_registry.host} refused the credentials "
        "for user 'reader' (401); check that the account"
    ), line
    assert "not-the-password" not in line


def test_a_base_registry_that_does_not_answer_is_unreachable_in_one_line(
    docker_config: Path,
) -> None:
    reference = f"127.0.0.1:{free_port()}/base/nginx:bookworm"
    with pytest.raises(RegistryUnreachableError) as raised, base_source(reference) as source:
        source.manifest()
    assert raised.value.exit_code == ExitCode.REGISTRY_UNREACHABLE
    line = raised.value.one_line()
    assert line.startswith(f"base image {reference}: cannot reach registry 127.0.0.1:"), line
    assert line.endswith("or use a base image on a registry this machine reaches"), line


def test_a_base_its_registry_does_not_know_is_a_config_error(
    open_registry: RegistryService, docker_config: Path
) -> None:
    reference = f"{open_registry.host}/base/nothing-here:v1"
    with pytest.raises(ConfigError) as raised, base_source(reference) as source:
        source.manifest()
    assert raised.value.one_line() == (
        f"base image {reference} is not in registry {open_registry.host}; check its name and "
        "tag (`docker pull` it to see)"
    )
