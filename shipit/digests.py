"""Content digests as the OCI specs and the engine spell them (`sha256:<hex>`), and the short
id shipit prints for one (the first 12 hex digits, as `docker images` does)."""

from __future__ import annotations

import hashlib
from typing import Protocol

ALGORITHM = "sha256"


class _Hash(Protocol):
    def hexdigest(self) -> str: ...


def sha256_digest(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def digest_of(running: _Hash) -> str:
    """The digest of what a running hashlib.sha256() has been fed."""
    return f"{ALGORITHM}:{running.hexdigest()}"


def short_id(digest: str) -> str:
    return digest.removeprefix(f"{ALGORITHM}:")[:12]
