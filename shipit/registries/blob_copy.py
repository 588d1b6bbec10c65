"""A blob copied from one registry's repository into another's, as crane and ko put a base
image's layers beside a new top layer: never through the engine, never whole in memory.

In order of cost: the target holds the blob already ("present", one HEAD); the target is the
source's registry, which mounts it from the source repository ("mounted", no bytes move);
else the bytes stream from the source's GET into an upload on the target ("copied"), checked
against the digest as they pass (blob_reads.BlobStream), and the target checks them again
when the upload is closed with the digest. A copy that fails ends its upload session.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shipit.digests import short_id
from shipit.errors import ShipitError
from shipit.registries.hosts import repository_path, same_origin

if TYPE_CHECKING:
    from shipit.registries.distribution import RegistryClient

CopyOutcome = Literal["present", "mounted", "copied"]
# Blobs this small (a config, an empty layer) are read whole and sent as bytes.
SMALL_BLOB = 1024 * 1024


def copy_blob(
    source: RegistryClient,
    source_repository: str,
    target: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    *,
    timeout: float | None = None,
) -> CopyOutcome:
    """Puts the blob `digest` of `size` bytes that `source_repository` holds on `source` into
    `repository` on `target`. Errors are the clients' own (their classes, so their exit codes
    and whether a retry may help), said as the copy of which blob from where to where."""
    source_name = f"{source.display_host}/{repository_path(source.host, source_repository)}"
    target_name = f"{target.display_host}/{repository_path(target.host, repository)}"
    try:
        if target.blob_size(repository, digest) == size:
            return "present"
        location = None
        if same_origin(source.base_url, target.base_url):
            location = target.mount_blob(repository, digest, source_repository, timeout=timeout)
            if location is None:
                return "mounted"
        _stream(
            _Route(source, source_repository, target, repository), digest, size, location, timeout
        )
    except ShipitError as error:
        raise error.reworded(
            f"copying blob {short_id(digest)} from {source_name} to {target_name}: {error.message}"
        ) from error
    return "copied"


@dataclass(frozen=True)
class _Route:
    """From which repository of which registry to which."""

    source: RegistryClient
    source_repository: str
    target: RegistryClient
    repository: str


def _stream(
    route: _Route, digest: str, size: int, location: str | None, timeout: float | None
) -> None:
    """The bytes from the source into an upload on the target (`location`, a declined
    mount's session, or a new one), which is ended again when the copy fails."""
    target, repository = route.target, route.repository
    opened = location is not None
    try:
        with route.source.open_blob(
            route.source_repository, digest, size, timeout=timeout
        ) as stream:
            body = io.BytesIO(stream.read()) if size <= SMALL_BLOB else stream
            location = location or target.start_upload(repository, timeout=timeout)
            opened = True
            target.upload_blob(repository, digest, body, size, timeout=timeout, location=location)
    except BaseException:
        if opened and location is not None:
            target.cancel_upload(repository, location)
        raise
