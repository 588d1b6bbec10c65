"""The multi-platform nginx base (linux/amd64 and linux/arm64) that scripts/testenv.sh writes
as an OCI image layout, pushed into a loopback registry as Docker Hub serves its official
nginx: one image index naming a manifest per platform.

A push asks the registry first (HEAD) and uploads only the blobs and manifests it lacks, so a
second push into the same registry sends a few requests and no layer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

LAYOUT = Path(os.environ.get("SHIPIT_TESTENV_DIR", "/var/tmp/shipit-testenv")) / (
    "nginx-bookworm-oci"
)
REPOSITORY = "base/nginx"
TAG = "bookworm"
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
TIMEOUT = 60.0


class PlatformBaseMissing(RuntimeError):
    """The layout is not there (or not whole): scripts/testenv.sh writes it."""


@dataclass(frozen=True)
class PlatformManifest:
    platform: str  # os/architecture[/variant], as `docker --platform` spells it
    digest: str


@dataclass(frozen=True)
class PlatformBase:
    """What a push left in the registry: `reference` (host/repository:tag) names the index."""

    reference: str
    index_digest: str
    manifests: tuple[PlatformManifest, ...]

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(manifest.platform for manifest in self.manifests)

    def digest_of(self, platform: str) -> str:
        """The manifest digest of `platform` (linux/arm64 also finds linux/arm64/v8)."""
        for manifest in self.manifests:
            if platform in (manifest.platform, manifest.platform.rsplit("/", 1)[0]):
                return manifest.digest
        raise KeyError(f"{self.reference} has no {platform} (it has {', '.join(self.platforms)})")


def platform_name(platform: Mapping[str, Any]) -> str:
    """os/architecture[/variant] of an index entry's `platform` object."""
    parts = [platform["os"], platform["architecture"]]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


class _Layout:
    """Reads an OCI image layout: its index and its blobs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        index_path = root / "index.json"
        if not (root / "oci-layout").is_file() or not index_path.is_file():
            raise PlatformBaseMissing(
                f"no multi-platform base layout in {root}: run scripts/testenv.sh (as root)"
            )
        self.index = index_path.read_bytes()
        document = json.loads(self.index)
        if document.get("mediaType") not in INDEX_TYPES:
            raise PlatformBaseMissing(f"{index_path} is not an image index: run scripts/testenv.sh")
        self.entries: list[dict[str, Any]] = document["manifests"]

    def blob(self, digest: str) -> Path:
        path = self.root / "blobs" / digest.replace(":", "/", 1)
        if not path.is_file():
            raise PlatformBaseMissing(f"{self.root} lacks blob {digest}: run scripts/testenv.sh")
        return path


class _Registry:
    """The few Registry API calls a push of a layout needs, over plain HTTP."""

    def __init__(self, url: str, repository: str, auth: tuple[str, str] | None) -> None:
        self.base = f"{url.rstrip('/')}/v2/{repository}"
        self.session = requests.Session()
        self.session.auth = auth

    def close(self) -> None:
        self.session.close()

    def _has(self, kind: str, digest: str) -> bool:
        response = self.session.head(f"{self.base}/{kind}/{digest}", timeout=TIMEOUT)
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def put_blob(self, digest: str, path: Path) -> None:
        if self._has("blobs", digest):
            return
        started = self.session.post(f"{self.base}/blobs/uploads/", timeout=TIMEOUT)
        started.raise_for_status()
        # A Location may be relative to the registry (Distribution) or absolute (S3, ECR).
        location = urljoin(started.url, started.headers["Location"])
        with path.open("rb") as body:
            done = self.session.put(
                location,
                params={"digest": digest},
                data=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                },
                timeout=TIMEOUT,
            )
        done.raise_for_status()

    def put_manifest(self, reference: str, media_type: str, body: bytes) -> str:
        """PUT a manifest (or index) under `reference`; the digest the registry gives it."""
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if reference == digest and self._has("manifests", digest):
            return digest
        response = self.session.put(
            f"{self.base}/manifests/{reference}",
            data=body,
            headers={"Content-Type": media_type},
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        stored = response.headers.get("Docker-Content-Digest", digest)
        if stored != digest:
            raise RuntimeError(f"the registry stored {reference} as {stored}, not {digest}")
        return digest


def push_platform_base(
    registry_url: str,
    *,
    repository: str = REPOSITORY,
    tag: str = TAG,
    auth: tuple[str, str] | None = None,
    layout: Path = LAYOUT,
) -> PlatformBase:
    """Push the layout at `layout` to `registry_url` (http://host:port) as repository:tag.

    `auth` is (user, password) for a registry with htpasswd; None for an anonymous one.
    Raises PlatformBaseMissing when the layout is not there, requests' HTTPError when the
    registry refuses a call.
    """
    source = _Layout(layout)
    registry = _Registry(registry_url, repository, auth)
    manifests = []
    try:
        for entry in source.entries:
            body = source.blob(entry["digest"]).read_bytes()
            manifest = json.loads(body)
            for blob in (manifest["config"], *manifest["layers"]):
                registry.put_blob(blob["digest"], source.blob(blob["digest"]))
            digest = registry.put_manifest(entry["digest"], entry["mediaType"], body)
            manifests.append(PlatformManifest(platform_name(entry["platform"]), digest))
        index_type = json.loads(source.index)["mediaType"]
        index_digest = registry.put_manifest(tag, index_type, source.index)
    finally:
        registry.close()
    host = registry_url.split("://", 1)[-1].rstrip("/")
    return PlatformBase(f"{host}/{repository}:{tag}", index_digest, tuple(manifests))
