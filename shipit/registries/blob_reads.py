"""Blob reads of a `RegistryClient`: a blob's bytes streamed in pieces, checked against its
digest and size as they are read, or a small blob (an image config) read whole.

Where a registry answers a blob read with a redirect to a CDN (Docker Hub, GHCR), the client's
`_request` follows it and sends the CDN no credentials (hosts.same_origin). A blob is content
addressed: bytes that do not hash to the digest they were asked for are the registry's fault,
and the read fails at its end, before anyone can take the bytes for the blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import requests
import urllib3.exceptions

from shipit.closing import Closing
from shipit.digests import ALGORITHM, digest_of
from shipit.errors import PushError
from shipit.registries.challenge import repository_scope
from shipit.registries.client_part import ClientPart
from shipit.registries.errors import RegistryConnectionError, RegistryResponseError

# How much one read asks the connection for when the caller wants everything.
PIECE = 1024 * 1024
# A config is a few kilobytes; this leaves room for a long history and is still no layer.
CONFIG_LIMIT = 8 * 1024 * 1024


class BlobStream(Closing):
    """One blob's bytes as a registry serves them, for reading once from the start.

    `read` hands on the bytes as they come and, at the end, checks that they are `size` bytes
    that hash to `digest`; a stream that ends short, runs long or hashes to something else
    raises instead of ending. `seek(0)` (what a request sent again after a challenge asks of
    its body) opens the blob again. `len()` is the blob's size, which is what lets requests
    send the stream as a body with a Content-Length.
    """

    def __init__(
        self,
        response: requests.Response,
        reopen: Callable[[], requests.Response],
        *,
        name: str,
        digest: str,
        size: int,
    ) -> None:
        self._response = response
        self._reopen = reopen
        self.name = name  # "registry HOST's blob REPOSITORY@DIGEST", for errors
        self.digest = digest
        self.size = size
        self._hash = hashlib.sha256()
        self._position = 0
        self._checked = False

    def __len__(self) -> int:
        return self.size

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise ValueError("a blob stream can only go back to its start")
        if self._position:
            self.close()
            self._response = self._reopen()
            self._hash = hashlib.sha256()
            self._position = 0
            self._checked = False
        return 0

    def read(self, amount: int = -1) -> bytes:
        if amount < 0:
            return b"".join(iter(lambda: self.read(PIECE), b""))
        # One byte more than is left, so that a blob that runs long is seen to.
        wanted = min(amount, self.size - self._position + 1)
        try:
            piece = self._response.raw.read(wanted, decode_content=True) if wanted else b""
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # Raised as an OSError, a cut source would read as the target's fault to a
            # request that sends this stream as its body.
            raise RegistryConnectionError(
                f"the connection broke while reading {self.name} "
                f"({type(error).__name__} after {self._position:,} bytes)",
                "check the network path to the registry, then retry",
                transient=True,
            ) from error
        self._position += len(piece)
        self._hash.update(piece)
        if self._position > self.size:
            self._fail(f"has more than the {self.size:,} bytes its descriptor says")
        if not piece and wanted and not self._checked:
            self._check()
        return piece

    def _check(self) -> None:
        if self._position != self.size:
            self._fail(f"ended after {self._position:,} of its {self.size:,} bytes")
        computed = digest_of(self._hash)
        if computed != self.digest:
            self._fail(f"has content that hashes to {computed}")
        self._checked = True

    def _fail(self, what: str) -> None:
        self.close()
        raise PushError(
            f"{self.name} {what}", "retry; if it persists the registry's storage is damaged"
        )

    def close(self) -> None:
        self._response.close()


class BlobReads(ClientPart):
    """Blob reads of a `RegistryClient`."""

    def open_blob(
        self, repository: str, digest: str, size: int | None = None, *, timeout: float | None = None
    ) -> BlobStream:
        """The blob's bytes, streamed and checked as they are read (BlobStream). `size`: what
        its descriptor says, else what the registry's Content-Length says. A blob the
        registry lacks is a RegistryResponseError (404, BLOB_UNKNOWN)."""
        repository = self._repository(repository)
        name = f"registry {self.display_host}'s blob {repository}@{digest}"
        if not digest.startswith(f"{ALGORITHM}:"):
            raise PushError(
                f"{name} is not named by a {ALGORITHM} digest",
                f"use an image whose manifests name their blobs by {ALGORITHM}, as docker does",
            )

        def open_response() -> requests.Response:
            response = self._request(
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                scope=repository_scope(repository),
                # The bytes as stored: their digest is what is checked.
                headers={"Accept-Encoding": "identity"},
                absent_ok=True,
                timeout=timeout,
                stream=True,
            )
            if response is None:
                raise RegistryResponseError(
                    f"registry {self.display_host} has no blob {repository}@{digest}",
                    "check the image's name and tag; its registry has lost this blob",
                    status=404,
                    code="BLOB_UNKNOWN",
                )
            return response

        response = open_response()
        length = response.headers.get("Content-Length", "")
        served = int(length) if length.isdigit() else None
        expected = served if size is None else size
        if expected is None or served not in (None, expected):
            response.close()
            said = "no size" if served is None else f"{served:,} bytes"
            raise PushError(
                f"{name} is served with {said}"
                + ("" if expected is None else f", where {expected:,} were expected"),
                "check the image in its registry; retry, and if it persists its storage is damaged",
            )
        return BlobStream(response, open_response, name=name, digest=digest, size=expected)

    def read_blob(
        self,
        repository: str,
        digest: str,
        limit: int = CONFIG_LIMIT,
        *,
        size: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """A small blob (an image config) whole, checked against its digest (and `size`, as
        open_blob); a PushError when it has more than `limit` bytes."""
        with self.open_blob(repository, digest, size, timeout=timeout) as stream:
            if stream.size > limit:
                raise PushError(
                    f"{stream.name} has {stream.size:,} bytes, more than the {limit:,} that "
                    "shipit reads whole",
                    "check that the digest names an image config, not a layer",
                )
            return stream.read()
