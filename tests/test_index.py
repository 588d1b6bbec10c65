"""OCI image indexes: the descriptors shipit reads from a manifest or an index, the one index
body it writes, and that body stored in a real Distribution registry and read back, by tag
and by digest, by shipit's client and by skopeo (which picks a platform from it as docker
does)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.services import RegistryService
from shipit.digests import sha256_digest
from shipit.errors import PushError
from shipit.registries.credentials import Credentials
from shipit.registries.distribution import RegistryClient
from shipit.registries.manifest import (
    DOCKER_MANIFEST_LIST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    index_body,
    index_manifest,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


# -- descriptors and the index body (pure) ------------------------------------------------


def test_an_index_names_its_platforms_and_an_image_its_layers() -> None:
    index = Manifest(
        digest=DIGEST_A,
        media_type=DOCKER_MANIFEST_LIST,
        content={
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": DIGEST_B,
                    "size": 528,
                    "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": DIGEST_A,
                    "size": 840,
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
            ],
        },
    )
    arm64, attestation = index.entries()
    assert (arm64.digest, arm64.size, arm64.platform_name) == (DIGEST_B, 528, "linux/arm64/v8")
    assert not arm64.is_attestation and attestation.is_attestation
    assert attestation.annotations == {"vnd.docker.reference.type": "attestation-manifest"}
    assert index.layers() == () and index.config is None
    with pytest.raises(TypeError):
        arm64.platform["os"] = "windows"  # type: ignore[index]
    assert arm64 in {arm64, attestation}  # hashable, though its platform is a mapping

    image = Manifest(
        digest=DIGEST_B,
        media_type=OCI_MANIFEST,
        content={
            "config": {"mediaType": OCI_CONFIG, "digest": DIGEST_A, "size": 2},
            "layers": [{"mediaType": OCI_LAYER, "digest": DIGEST_B, "size": 10}],
        },
    )
    assert image.entries() == ()
    assert image.config == Descriptor(OCI_CONFIG, DIGEST_A, 2)
    assert image.layers() == (Descriptor(OCI_LAYER, DIGEST_B, 10),)


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("not an object", "entry 1 of manifest sha256:a+ is not a JSON object"),
        ({"mediaType": OCI_MANIFEST, "size": 1}, "has no valid digest"),
        ({"digest": "sha256:abc", "size": 1}, "has no valid digest"),
        ({"digest": DIGEST_B, "size": "12"}, "has no valid size"),
        ({"digest": DIGEST_B, "size": True}, "has no valid size"),
        ({"digest": DIGEST_B, "size": 1, "platform": "linux/amd64"}, "platform that is not"),
    ],
)
def test_a_broken_index_entry_is_one_error_naming_it(entry: object, said: str) -> None:
    index = Manifest(DIGEST_A, OCI_INDEX, {"manifests": [entry]})
    with pytest.raises(PushError, match=said) as raised:
        index.entries()
    assert "\n" not in raised.value.one_line()


def test_the_index_body_is_the_same_bytes_for_the_same_entries_in_any_key_order() -> None:
    amd64 = Descriptor(OCI_MANIFEST, DIGEST_A, 500, {"os": "linux", "architecture": "amd64"})
    arm64 = Descriptor(
        OCI_MANIFEST, DIGEST_B, 501, {"variant": "v8", "architecture": "arm64", "os": "linux"}
    )
    body = index_body([amd64, arm64])
    amd64_json = (
        f'{{"digest":"{DIGEST_A}","mediaType":"{OCI_MANIFEST}",'
        '"platform":{"architecture":"amd64","os":"linux"},"size":500}'
    )
    arm64_json = (
        f'{{"digest":"{DIGEST_B}","mediaType":"{OCI_MANIFEST}",'
        '"platform":{"architecture":"arm64","os":"linux","variant":"v8"},"size":501}'
    )
    assert body.decode() == (
        f'{{"manifests":[{amd64_json},{arm64_json}],"mediaType":"{OCI_INDEX}","schemaVersion":2}}'
    )
    reordered = Descriptor(
        OCI_MANIFEST, DIGEST_B, 501, {"os": "linux", "architecture": "arm64", "variant": "v8"}
    )
    assert index_body([amd64, reordered]) == body
    manifest = index_manifest([amd64, arm64])
    assert (manifest.raw, manifest.digest, manifest.media_type) == (
        body,
        sha256_digest(body),
        OCI_INDEX,
    )
    assert manifest.entries() == (amd64, arm64)
    with pytest.raises(ValueError, match="needs a platform"):
        index_body([Descriptor(OCI_MANIFEST, DIGEST_A, 500)])


def test_the_client_asks_for_indexes_too() -> None:
    assert OCI_INDEX in MANIFEST_ACCEPT and DOCKER_MANIFEST_LIST in MANIFEST_ACCEPT


# -- in a real registry --------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryService]:
    with RegistryService(username="shipit", password="index-" + uuid.uuid4().hex) as made:
        yield made


def client_of(registry: RegistryService) -> RegistryClient:
    assert registry.username and registry.password
    return RegistryClient(registry.host, Credentials(registry.username, registry.password))


def put_blob(client: RegistryClient, repository: str, data: bytes) -> str:
    digest = sha256_digest(data)
    client.upload_blob(repository, digest, io.BytesIO(data), len(data))
    return digest


def one_file_layer(text: str) -> tuple[bytes, str]:
    """A gzipped tar holding one file, and its diff id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("etc/platform")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = buffer.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256_digest(tar_bytes)


def put_platform_image(
    client: RegistryClient, repository: str, os_name: str, architecture: str, variant: str = ""
) -> Descriptor:
    """An image of one platform (a config and one layer) in the registry, as its index
    entry."""
    layer, diff_id = one_file_layer(f"{os_name}/{architecture}\n")
    platform = {"os": os_name, "architecture": architecture}
    if variant:
        platform["variant"] = variant
    config = json.dumps(
        {**platform, "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}},
        sort_keys=True,
    ).encode()
    content: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": put_blob(client, repository, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": OCI_LAYER,
                "digest": put_blob(client, repository, layer),
                "size": len(layer),
            }
        ],
    }
    raw = json.dumps(content, sort_keys=True).encode()
    digest = sha256_digest(raw)
    client.put_manifest(repository, digest, Manifest(digest, OCI_MANIFEST, content, raw))
    return Descriptor(OCI_MANIFEST, digest, len(raw), platform)


@pytest.fixture(scope="module")
def stored_index(registry: RegistryService) -> Iterator[tuple[str, Manifest, list[Descriptor]]]:
    repository = f"index/{uuid.uuid4().hex[:8]}"
    with client_of(registry) as client:
        entries = [
            put_platform_image(client, repository, "linux", "amd64"),
            put_platform_image(client, repository, "linux", "arm64", "v8"),
        ]
        index = index_manifest(entries)
        answered = client.put_manifest(repository, "multi", index)
        assert answered == index.digest
    yield repository, index, entries


def test_an_index_put_under_a_tag_comes_back_by_tag_and_by_digest(
    registry: RegistryService, stored_index: tuple[str, Manifest, list[Descriptor]]
) -> None:
    repository, index, entries = stored_index
    with client_of(registry) as client:
        assert client.manifest_digest(repository, "multi") == index.digest
        for reference in ("multi", index.digest):
            served = client.get_manifest(repository, reference)
            assert served.is_index and served.media_type == OCI_INDEX
            assert served.raw == index.raw and served.digest == index.digest
            assert list(served.entries()) == entries
        arm64 = client.get_manifest(repository, entries[1].digest)
        assert not arm64.is_index
        config = client.image_config(repository, arm64)
        assert (config["architecture"], config["variant"]) == ("arm64", "v8")
        assert config["rootfs"]["diff_ids"] == [
            one_file_layer("linux/arm64\n")[1]
        ]  # the layer the config names
        layer = arm64.layers()[0]
        assert hashlib.sha256(client.read_blob(repository, layer.digest)).hexdigest() == (
            layer.digest.removeprefix("sha256:")
        )


def skopeo(registry: RegistryService, *args: str) -> str:
    done = subprocess.run(
        [
            "skopeo",
            *args[:-1],
            "--tls-verify=false",
            "--creds",
            f"{registry.username}:{registry.password}",
            f"docker://{registry.host}/{args[-1]}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_skopeo_reads_the_same_index_and_picks_each_platform_from_it(
    registry: RegistryService, stored_index: tuple[str, Manifest, list[Descriptor]]
) -> None:
    repository, index, entries = stored_index
    assert skopeo(registry, "inspect", "--raw", f"{repository}:multi").encode() == index.raw
    for entry in entries:
        assert entry.platform is not None
        with client_of(registry) as client:
            image = client.get_manifest(repository, entry.digest)
        layers = [layer.digest for layer in image.layers()]
        chosen = json.loads(
            skopeo(
                registry,
                "--override-os",
                entry.platform["os"],
                "--override-arch",
                entry.platform["architecture"],
                "inspect",
                f"{repository}:multi",
            )
        )
        # skopeo's Digest is the index's; the platform's image shows in its layers.
        assert (chosen["Digest"], chosen["Architecture"], chosen["Layers"]) == (
            index.digest,
            entry.platform["architecture"],
            layers,
        )
