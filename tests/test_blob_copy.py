"""Blobs copied registry to registry (registries/blob_copy.py), as a base image's layers go to
where the image for several platforms is pushed: against real Distribution registries, with
the fault proxy in front where a test must see each request (a mount moves no bytes), play a
CDN (which must get no credentials) or an upload host with a challenge of its own, and the
ECR stand-in, which declines mounts as ECR does by default."""

from __future__ import annotations

import secrets
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.ecr_iam import EcrIamProxy
from harness.faultproxy import FaultProxy, Seen
from harness.services import RegistryAuth, RegistryService, moto_ecr_password
from shipit.digests import sha256_digest, short_id
from shipit.errors import ExitCode, PushError
from shipit.registries.blob_copy import SMALL_BLOB, copy_blob
from shipit.registries.credentials import Credentials
from shipit.registries.distribution import RegistryClient
from shipit.registries.errors import RegistryResponseError
from tests.test_ecr_iam import ADMIN_POLICY
from tests.test_index import put_blob

SIZES = pytest.mark.parametrize("size", [3_000, 3 * SMALL_BLOB + 17], ids=["small", "streamed"])


@pytest.fixture(scope="module")
def source() -> Iterator[RegistryService]:
    with RegistryService(username="base", password="src-" + uuid.uuid4().hex) as made:
        yield made


@pytest.fixture(scope="module")
def target() -> Iterator[RegistryService]:
    with RegistryService(username="site", password="dst-" + uuid.uuid4().hex) as made:
        yield made


def client_of(registry: RegistryService, host: str | None = None) -> RegistryClient:
    """A client of `registry`, reached at `host` (a proxy in front of it) if given."""
    login = Credentials(registry.username, registry.password) if registry.username else None
    return RegistryClient(host or registry.host, login)


def repository() -> str:
    return f"copy/{uuid.uuid4().hex[:8]}"


def stored_blob(registry: RegistryService, name: str, size: int) -> tuple[bytes, str]:
    data = secrets.token_bytes(size)
    with client_of(registry) as client:
        return data, put_blob(client, name, data)


def served(registry: RegistryService, name: str, digest: str) -> bytes | None:
    """The blob as the registry itself serves it; None when it holds none."""
    assert registry.username and registry.password
    login = (registry.username, registry.password)
    headers = {}
    if registry.token_service is not None:
        granted = requests.get(
            registry.token_service.realm,
            params={"service": registry.token_service.service, "scope": f"repository:{name}:pull"},
            auth=login,
            timeout=30,
        )
        headers["Authorization"] = f"Bearer {granted.json()['token']}"
    response = requests.get(
        f"{registry.url}/v2/{name}/blobs/{digest}",
        auth=None if headers else login,
        headers=headers,
        timeout=30,
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.content


def uploads_left(registry: RegistryService, name: str) -> list[str]:
    """The upload sessions the registry keeps for the repository (Distribution's storage)."""
    assert registry.root_dir is not None
    folder = registry.root_dir / "storage/docker/registry/v2/repositories" / name / "_uploads"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def blob_data_file(registry: RegistryService, digest: str) -> Path:
    assert registry.root_dir is not None
    hex_digits = digest.removeprefix("sha256:")
    blobs = registry.root_dir / "storage/docker/registry/v2/blobs/sha256"
    return blobs / hex_digits[:2] / hex_digits / "data"


def requests_of(log: list[Seen]) -> list[tuple[str, str]]:
    """(method, what) of each request: the path up to the blob's digest or the upload."""
    return [(seen.method, seen.path.split("/v2/", 1)[-1].split("?")[0][:60]) for seen in log]


@pytest.fixture
def proxy(source: RegistryService) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", source.port) as made:
        yield made


# -- between two registries -----------------------------------------------------------------


@SIZES
def test_a_blob_of_another_registry_is_copied_then_present(
    source: RegistryService, target: RegistryService, proxy: FaultProxy, size: int
) -> None:
    from_name, to_name = repository(), repository()
    data, digest = stored_blob(source, from_name, size)
    with client_of(source, proxy.host) as reader, client_of(target) as writer:
        assert copy_blob(reader, from_name, writer, to_name, digest, size) == "copied"
        assert served(target, to_name, digest) == data
        before = len(proxy.seen())
        assert copy_blob(reader, from_name, writer, to_name, digest, size) == "present"
    assert proxy.seen()[before:] == []  # the target's HEAD was enough
    assert uploads_left(target, to_name) == []


def test_a_copy_streams_without_holding_the_blob_in_memory(
    source: RegistryService, target: RegistryService
) -> None:
    size = 48 * SMALL_BLOB
    from_name, to_name = repository(), repository()
    data, digest = stored_blob(source, from_name, size)
    with client_of(source) as reader, client_of(target) as writer:
        reader.ping()
        writer.ping()
        tracemalloc.start()
        try:
            assert copy_blob(reader, from_name, writer, to_name, digest, size) == "copied"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < size / 8, f"the copy held {peak:,} bytes at once"
    assert served(target, to_name, digest) == data


@SIZES
def test_a_source_that_redirects_to_a_cdn_sends_it_no_credentials(
    source: RegistryService, target: RegistryService, proxy: FaultProxy, size: int
) -> None:
    from_name, to_name = repository(), repository()
    data, digest = stored_blob(source, from_name, size)
    proxy.set_mode("cdn-redirect")
    with client_of(source, proxy.host) as reader, client_of(target) as writer:
        assert copy_blob(reader, from_name, writer, to_name, digest, size) == "copied"
    assert [seen.method for seen in proxy.seen("redirected")] == ["GET"]
    assert [seen.method for seen in proxy.cdn.seen("forwarded")] == ["GET"]
    assert proxy.cdn.authorizations == []
    assert served(target, to_name, digest) == data


def test_an_upload_sent_again_after_a_challenge_reads_the_source_again(
    source: RegistryService, target: RegistryService
) -> None:
    """An upload host that asks for credentials of its own gets the PATCH twice: the stream
    from the source goes back to its start by reading the blob again."""
    size = 2 * SMALL_BLOB + 5
    from_name, to_name = repository(), repository()
    data, digest = stored_blob(source, from_name, size)
    with (
        FaultProxy("127.0.0.1", source.port) as reading,
        FaultProxy("127.0.0.1", target.port) as writing,
    ):
        writing.set_mode("other-host-location")
        writing.upload_host.challenge = 'Basic realm="uploads"'
        with client_of(source, reading.host) as reader, client_of(target, writing.host) as writer:
            reader.ping()  # the source's challenge is learned, so each blob read is one GET
            assert copy_blob(reader, from_name, writer, to_name, digest, size) == "copied"
        assert [seen.method for seen in writing.upload_host.seen("forwarded")] == [
            "PATCH",
            "PATCH",
            "PUT",
            "PUT",
        ]
        blob_reads = [s for s in reading.seen() if s.method == "GET" and digest in s.path]
        assert len(blob_reads) == 2
    assert served(target, to_name, digest) == data


# -- within one registry ----------------------------------------------------------------


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_within_one_registry_a_blob_is_mounted_and_no_bytes_move(auth: RegistryAuth) -> None:
    with (
        RegistryService(auth=auth, username="site", password="p-" + uuid.uuid4().hex) as registry,
        FaultProxy("127.0.0.1", registry.port) as proxy,
    ):
        from_name, to_name = repository(), repository()
        data, digest = stored_blob(registry, from_name, 2 * SMALL_BLOB)
        with client_of(registry, proxy.host) as reader, client_of(registry, proxy.host) as writer:
            outcome = copy_blob(reader, from_name, writer, to_name, digest, len(data))
        assert outcome == "mounted"
        writes = [seen for seen in proxy.seen() if seen.method in ("POST", "PATCH", "PUT")]
        # Only the mount (sent again after a Bearer challenge for its two scopes); no blob read.
        assert {seen.method for seen in writes} == {"POST"}
        assert all(f"?mount={digest}&from={from_name}" in seen.path for seen in writes)
        assert not [seen for seen in proxy.seen() if seen.method == "GET" and digest in seen.path]
        assert served(registry, to_name, digest) == data


def test_a_registry_that_declines_the_mount_gets_the_bytes(ecr_registry: RegistryService) -> None:
    """ECR with blob mounting off (its default) answers a mount with an upload session
    (202): the bytes go there."""
    from_name, to_name = repository(), repository()
    data, digest = stored_blob(ecr_registry, from_name, 2 * SMALL_BLOB)
    with EcrIamProxy(
        "127.0.0.1",
        ecr_registry.port,
        ADMIN_POLICY,
        credentials=("AWS", moto_ecr_password()),
        blob_mounting=False,
    ) as proxy:
        with (
            client_of(ecr_registry, proxy.host) as reader,
            client_of(ecr_registry, proxy.host) as writer,
        ):
            assert copy_blob(reader, from_name, writer, to_name, digest, len(data)) == "copied"
        judged = [(call.method, call.action) for call in proxy.calls]
    assert judged == [
        ("HEAD", "ecr:BatchCheckLayerAvailability"),
        ("POST", "ecr:InitiateLayerUpload"),
        ("GET", "ecr:GetDownloadUrlForLayer"),
        ("PATCH", "ecr:UploadLayerPart"),
        ("PUT", "ecr:CompleteLayerUpload"),
    ]
    assert served(ecr_registry, to_name, digest) == data


# -- failures ----------------------------------------------------------------------------


@SIZES
@pytest.mark.parametrize("damage", ["flipped", "cut short"])
def test_a_source_serving_other_bytes_fails_the_copy_in_one_line(
    source: RegistryService, target: RegistryService, size: int, damage: str
) -> None:
    from_name, to_name = repository(), repository()
    data, digest = stored_blob(source, from_name, size)
    stored = blob_data_file(source, digest)
    middle = size // 2
    if damage == "flipped":
        stored.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
    else:
        stored.write_bytes(data[:-1000])
    with (
        FaultProxy("127.0.0.1", target.port) as writing,
        client_of(source) as reader,
        client_of(target, writing.host) as writer,
        pytest.raises(PushError) as raised,
    ):
        copy_blob(reader, from_name, writer, to_name, digest, size)
    line = raised.value.one_line()
    said = {
        "flipped": "has content that hashes to sha256:",
        "cut short": f"is served with {size - 1000:,} bytes, where {size:,} were expected",
    }[damage]
    assert line.startswith(
        f"copying blob {short_id(digest)} from {source.host}/{from_name} to "
        f"{writing.host}/{to_name}: registry {source.host}'s blob {from_name}@{digest} {said}"
    ), line
    assert line.endswith("storage is damaged"), line
    assert raised.value.exit_code == ExitCode.PUSH
    assert source.password not in line and target.password not in line
    assert served(target, to_name, digest) is None
    uploads = [seen.method for seen in writing.seen() if "/blobs/uploads/" in seen.path]
    if damage == "flipped" and size > SMALL_BLOB:
        # Found at the stream's end, when the bytes have gone: the session is ended (a
        # Distribution registry keeps it anyway, as its offset moved, until it purges it).
        assert uploads == ["POST", "PATCH", "DELETE"]
    else:
        # Found before a byte was sent: no upload was begun.
        assert uploads == []


def test_a_blob_read_whole_is_bounded_and_checked_against_its_size(
    source: RegistryService,
) -> None:
    name = repository()
    data, digest = stored_blob(source, name, 5_000)
    with client_of(source) as reader:
        assert reader.read_blob(name, digest, size=5_000) == data
        with pytest.raises(PushError) as too_big:
            reader.read_blob(name, digest, 4_096)
        with pytest.raises(PushError) as other_size:
            reader.read_blob(name, digest, size=4_000)
    blob = f"registry {source.host}'s blob {name}@{digest}"
    assert too_big.value.one_line() == (
        f"{blob} has 5,000 bytes, more than the 4,096 that shipit reads whole; check that the "
        "digest names an image config, not a layer"
    )
    assert other_size.value.one_line().startswith(
        f"{blob} is served with 5,000 bytes, where 4,000 were expected;"
    )


@pytest.mark.parametrize("where", ["another registry", "the same registry"])
def test_a_blob_the_source_lacks_is_one_line_naming_it(
    source: RegistryService, target: RegistryService, where: str
) -> None:
    """In one registry the mount is declined first (202, an upload session): it is ended, as
    docker ends the uploads of a push that fails. (Distribution 2.8 answers the DELETE but
    keeps the session's folder until it purges old uploads.)"""
    same = where == "the same registry"
    writes_to = source if same else target
    from_name, to_name = repository(), repository()
    missing = sha256_digest(b"never stored")
    with FaultProxy("127.0.0.1", writes_to.port) as writing:
        with (
            client_of(source, writing.host if same else None) as reader,
            client_of(writes_to, writing.host) as writer,
            pytest.raises(RegistryResponseError) as raised,
        ):
            copy_blob(reader, from_name, writer, to_name, missing, 12)
        uploads = [seen.method for seen in writing.seen() if "/blobs/uploads/" in seen.path]
    assert raised.value.status == 404
    assert raised.value.one_line() == (
        f"copying blob {short_id(missing)} from {source.host if not same else writing.host}/"
        f"{from_name} to {writing.host}/{to_name}: registry "
        f"{writing.host if same else source.host} has no blob {from_name}@{missing}; "
        "check the image's name and tag; its registry has lost this blob"
    )
    assert uploads == (["POST", "DELETE"] if same else [])
