"""What a registry holds, read the way a test or a benchmark checks a push: tags, blobs and
the image config digest. shipit's own client reads only what a push needs."""

from __future__ import annotations

import re
from typing import Any

from shipit.errors import PushError
from shipit.registries.challenge import repository_scope
from shipit.registries.credentials import Credentials
from shipit.registries.distribution import RegistryClient

_MAX_TAG_PAGES = 1000


def _next_link(header: str | None) -> str | None:
    """The target of a `Link: <url>; rel="next"` header (tag list pagination)."""
    if not header:
        return None
    for part in header.split(","):
        match = re.match(r'\s*<([^>]*)>\s*;.*\brel="?next"?', part)
        if match:
            return match.group(1)
    return None


class RegistryReader(RegistryClient):
    def __init__(
        self, host: str, username: str | None = None, password: str | None = None, **options: Any
    ) -> None:
        """An account as a test or a benchmark names it: a user and a password, or none."""
        login = Credentials(username, password=password or "") if username else None
        super().__init__(host, login, **options)

    def config_digest(self, repository: str, reference: str) -> str | None:
        """The image config digest (the local image ID for a docker-pushed image)."""
        manifest = self._fetch_manifest(self._repository(repository), reference)
        if manifest is None:
            return None
        if manifest.is_index:
            raise PushError(f"{repository}:{reference} is a multi-platform index")
        digest = manifest.config_digest
        if digest is None:
            raise PushError(f"manifest of {repository}:{reference} has no config digest")
        return digest

    def image_ids(self, repository: str, reference: str) -> set[str]:
        """The ids a local image of what `reference` serves may carry: its config digest (the
        classic image store) and its manifest digest (the containerd image store)."""
        manifest = self._fetch_manifest(self._repository(repository), reference)
        if manifest is None:
            return set()
        return {manifest.digest, manifest.config_digest or manifest.digest}

    def blob_exists(self, repository: str, digest: str) -> bool:
        repository = self._repository(repository)
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=repository_scope(repository),
            absent_ok=True,
        )
        return response is not None

    def tags(self, repository: str) -> list[str]:
        """All tags of `repository`; [] when the repository does not exist."""
        repository = self._repository(repository)
        found: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list"
        for _ in range(_MAX_TAG_PAGES):
            if path is None:
                break
            response = self._request(
                "GET", path, scope=repository_scope(repository), absent_ok=True
            )
            if response is None:
                return found
            body = self._json(response, what=f"tag list of {repository}")
            found.extend(tag for tag in body.get("tags") or [] if isinstance(tag, str))
            path = _next_link(response.headers.get("Link"))
        return found
