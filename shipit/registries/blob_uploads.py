"""The blob uploads of a push that shipit makes itself (push/upload.py): an upload session, a
mount from another repository, the bytes and the digest that closes the session.

`BlobUploads` is the part of `RegistryClient` (distribution.py) that writes blobs; its requests
go through the client's `_request`, with the client's credentials and redirect rules.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urljoin

import requests

from shipit.errors import PushError
from shipit.registries.challenge import repository_scope
from shipit.registries.client_part import ClientPart
from shipit.registries.errors import (
    RegistryAuthError,
    RegistryConnectionError,
    RegistryResponseError,
    is_transient,
)


class Body(Protocol):
    """What a request body is read from: a file, or a blob streamed from another registry
    (blob_reads.BlobStream). A request sent again reads it again from its start."""

    def read(self, amount: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class BlobUploads(ClientPart):
    """Blob writes of a `RegistryClient`."""

    def upload_blob(
        self,
        repository: str,
        digest: str,
        content: Body,
        size: int,
        *,
        timeout: float | None = None,
        location: str | None = None,
    ) -> None:
        """Uploads a blob as the engine does: one upload session, the bytes in one PATCH,
        then the PUT that names the digest, which the registry checks against the bytes.
        `timeout`: how long the registry may take no bytes and send none; `location`: an
        upload session already open (a declined mount's)."""
        repository = self._repository(repository)
        scope = repository_scope(repository, "pull,push")
        if location is None:
            location = self.start_upload(repository, timeout=timeout)
        patched = self._request(
            "PATCH",
            location,
            scope=scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=content,
            timeout=timeout,
        )
        assert patched is not None
        location = self._upload_location(patched)
        separator = "&" if "?" in location else "?"
        finished = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            scope=scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": "0"},
            timeout=timeout,
        )
        assert finished is not None
        self._check_stored(finished, repository, digest)

    def upload_small_blob(self, repository: str, digest: str, content: bytes) -> None:
        """Uploads a small blob (a signature, an attestation) in two requests: the session,
        then one PUT that carries the bytes and names the digest (the spec's monolithic
        upload, as containerd pushes), where upload_blob's PATCH would be a third."""
        repository = self._repository(repository)
        location = self.start_upload(repository)
        separator = "&" if "?" in location else "?"
        finished = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            scope=repository_scope(repository, "pull,push"),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(content)),
            },
            body=content,
        )
        assert finished is not None
        self._check_stored(finished, repository, digest)

    def mount_blob(
        self, repository: str, digest: str, source: str, *, timeout: float | None = None
    ) -> str | None:
        """Asks the registry to mount a blob that its repository `source` holds into
        `repository`: None when mounted (201), else the Location of the upload session to
        send the bytes to (a registry that declines answers 202 with one; a refused pull of
        `source` gets a plain upload session)."""
        repository = self._repository(repository)
        source = self._repository(source)
        # A Bearer token for a mount must grant the pull of the source as well.
        scope = f"{repository_scope(repository, 'pull,push')} {repository_scope(source)}"
        try:
            answered = self._request(
                "POST",
                f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
                scope=scope,
                timeout=timeout,
            )
        except (RegistryAuthError, RegistryResponseError) as error:
            if is_transient(error):
                raise
            # No pull of the source, or a registry that refuses mounts: the POST without
            # them opens the session, or fails as it would have without the mount.
            return self.start_upload(repository, timeout=timeout)
        assert answered is not None  # only absent_ok requests answer None
        if answered.status_code == 201:
            return None
        return self._upload_location(answered)

    def start_upload(self, repository: str, *, timeout: float | None = None) -> str:
        """Opens an upload session: the Location that upload_blob sends the bytes to."""
        repository = self._repository(repository)
        started = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope=repository_scope(repository, "pull,push"),
            timeout=timeout,
        )
        assert started is not None  # only absent_ok requests answer None
        return self._upload_location(started)

    def cancel_upload(self, repository: str, location: str) -> None:
        """Ends an upload session that will not be finished, so the registry keeps nothing of
        it; a registry that cannot be told is left to expire the session itself."""
        repository = self._repository(repository)
        try:
            self._request(
                "DELETE",
                location,
                scope=repository_scope(repository, "pull,push"),
                absent_ok=True,
            )
        except (RegistryAuthError, RegistryResponseError, RegistryConnectionError):
            return

    # -- internals -----------------------------------------------------------------------

    def _check_stored(self, finished: requests.Response, repository: str, digest: str) -> None:
        answered = finished.headers.get("Docker-Content-Digest", digest)
        if answered != digest:
            raise PushError(
                f"registry {self.display_host} stored the blob {digest[:19]} of "
                f"{repository} as {answered[:19]}",
                "push again; if it persists the registry rewrites blobs",
            )

    def _upload_location(self, response: requests.Response) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise PushError(
                f"registry {self.display_host} started a blob upload without a Location",
                "check that the host is a container registry",
            )
        return urljoin(response.url, location)
