"""A manifest as a registry serves it, and the media types shipit asks registries for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shipit.digests import sha256_digest

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join((DOCKER_MANIFEST_V2, OCI_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX))
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})


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
