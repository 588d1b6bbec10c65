"""A manifest as a registry serves it, the descriptors it names, the media types shipit asks
registries for, the one image manifest shipit writes for an image of its own, and the one OCI
image index body shipit writes for several platforms."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shipit.digests import sha256_digest
from shipit.errors import PushError
from shipit.reference import is_valid_digest

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join((DOCKER_MANIFEST_V2, OCI_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX))
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
# The media types of what shipit's own manifests name: Docker's, as `docker push` writes them.
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
# The platform of what buildx puts beside each image in an index: its attestations.
UNKNOWN_PLATFORM = "unknown/unknown"


@dataclass(frozen=True)
class Descriptor:
    """One entry of a manifest (its config, a layer) or of an index (a platform's manifest):
    what it is, its digest and size, and for an index entry its platform (`os`,
    `architecture`, `variant`...). `platform` and `annotations` are read-only mappings, left
    out of the hash."""

    media_type: str
    digest: str
    size: int
    platform: Mapping[str, Any] | None = field(default=None, hash=False)
    annotations: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        for name in ("platform", "annotations"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    @classmethod
    def from_json(cls, entry: object, where: str) -> Descriptor:
        """A descriptor as a manifest spells it; a PushError naming `where` when it is not one."""
        if not isinstance(entry, dict):
            raise _invalid(where, "is not a JSON object")
        media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
        if not isinstance(digest, str) or not is_valid_digest(digest):
            raise _invalid(where, f"has no valid digest ({digest!r})")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _invalid(where, f"has no valid size ({size!r})")
        platform, annotations = entry.get("platform"), entry.get("annotations")
        if platform is not None and not isinstance(platform, dict):
            raise _invalid(where, "has a platform that is not a JSON object")
        if annotations is not None and not isinstance(annotations, dict):
            raise _invalid(where, "has annotations that are not a JSON object")
        return cls(
            media_type=media_type if isinstance(media_type, str) else "",
            digest=digest,
            size=size,
            platform=platform,
            annotations=annotations,
        )

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            document["platform"] = dict(self.platform)
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        return document

    @property
    def platform_name(self) -> str:
        """ "os/architecture[/variant]" as docker spells a platform; "" when none is given."""
        if self.platform is None:
            return ""
        parts = [str(self.platform.get(key) or "") for key in ("os", "architecture", "variant")]
        return "/".join(part for part in parts if part)

    @property
    def is_attestation(self) -> bool:
        """An index entry that is no image to run: buildx's attestations beside each image."""
        return self.platform_name == UNKNOWN_PLATFORM


def _invalid(where: str, what: str) -> PushError:
    return PushError(
        f"{where} {what}",
        "check the image in its registry: the tool that wrote it made no valid manifest",
    )


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry serves it: `raw` holds its exact bytes (empty when the
    manifest was not fetched from a registry)."""

    digest: str
    media_type: str
    content: dict[str, Any]
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def raw_digest(self) -> str:
        """The digest of the exact bytes: what a registry must answer when they are PUT."""
        return sha256_digest(self.raw)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES or "manifests" in self.content

    @property
    def config_digest(self) -> str | None:
        config = self.content.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            return str(config["digest"])
        return None

    @property
    def config(self) -> Descriptor | None:
        """The image config's descriptor; None for an index."""
        if self.is_index:
            return None
        return Descriptor.from_json(self.content.get("config"), f"the config of manifest {self}")

    def layers(self) -> tuple[Descriptor, ...]:
        """An image manifest's layers, base first; () for an index."""
        if self.is_index:
            return ()
        return self._descriptors("layers", "layer")

    def entries(self) -> tuple[Descriptor, ...]:
        """An index's manifests, one per platform (and buildx's attestations); () for an
        image manifest."""
        if not self.is_index:
            return ()
        return self._descriptors("manifests", "entry")

    def _descriptors(self, key: str, what: str) -> tuple[Descriptor, ...]:
        listed = self.content.get(key)
        if not isinstance(listed, list):
            raise _invalid(f"manifest {self}", f"has no list of {key}")
        return tuple(
            Descriptor.from_json(entry, f"{what} {number} of manifest {self}")
            for number, entry in enumerate(listed, 1)
        )

    def __str__(self) -> str:
        return self.digest or self.raw_digest


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """JSON with sorted keys and no spaces: the same document gives the same bytes, and so
    the same digest, on every machine."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def index_body(
    entries: Iterable[Descriptor], annotations: Mapping[str, str] | None = None
) -> bytes:
    """The bytes of an OCI image index naming `entries` in the order given, each with its
    platform: what `docker pull --platform` chooses among."""
    listed = list(entries)
    unplaced = [entry.digest for entry in listed if not entry.platform_name]
    if unplaced:
        raise ValueError(f"an index entry needs a platform: {', '.join(unplaced)}")
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry.to_json() for entry in listed],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return canonical_json(document)


def index_manifest(
    entries: Iterable[Descriptor], annotations: Mapping[str, str] | None = None
) -> Manifest:
    """The index of `entries` as a `Manifest` that `RegistryClient.put_manifest` stores."""
    raw = index_body(entries, annotations)
    return Manifest(
        digest=sha256_digest(raw), media_type=OCI_INDEX, content=json.loads(raw), raw=raw
    )


def image_manifest(config: bytes, layers: Iterable[tuple[str, int]]) -> Manifest:
    """The manifest of an image shipit writes: its config's exact bytes and its gzip layers'
    (digest, size), base first. The one spelling of it, for the engine's load (the containerd
    image store takes it as it is, and names the image by its digest) and for shipit's own
    upload: the same image is the same manifest digest whichever image store held it."""
    content = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_V2,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "size": len(config),
            "digest": sha256_digest(config),
        },
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "size": size, "digest": digest}
            for digest, size in layers
        ],
    }
    raw = json.dumps(content, indent=3).encode()
    return Manifest(
        digest=sha256_digest(raw), media_type=DOCKER_MANIFEST_V2, content=content, raw=raw
    )
