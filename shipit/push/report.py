"""What a push did, per registry and tag, and the one error its exit code comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shipit.errors import PushError, ShipitError
from shipit.json_fields import fields_of


@dataclass
class TagOutcome:
    tag: str
    status: str  # pushed | unchanged | held-back | failed | planned
    digest: str = ""
    bytes_uploaded: int = 0
    attempts: int = 0


@dataclass
class TargetReport:
    name: str
    reference: str = ""
    status: str = "pending"  # pushed | unchanged | failed | planned
    digest: str = ""
    bytes_uploaded: int = 0
    seconds: float = 0.0
    tags: list[TagOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: ShipitError | None = None
    # With a signing key: its id (sha256 of the public key), and per digest signed whether
    # this push uploaded the signature and which attestations (shipit/signing/attach.py).
    signed_by: str = ""
    signatures: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, error: ShipitError) -> None:
        self.status = "failed"
        self.error = error

    @property
    def delivered(self) -> bool:
        """The registry now serves the image (pushed now or already there)."""
        return self.status in ("pushed", "unchanged") and bool(self.digest)

    @property
    def pinned(self) -> str:
        """REGISTRY/REPO@DIGEST: the reference a later step can rely on not moving."""
        return f"{self.reference}@{self.digest}"

    def references(self) -> list[str]:
        """Every reference that serves the image: each tag that points at it, then the digest."""
        if not self.delivered:
            return []
        tagged = [
            f"{self.reference}:{tag.tag}"
            for tag in self.tags
            if tag.status in ("pushed", "unchanged")
        ]
        return [*tagged, self.pinned]

    def planned(self) -> list[str]:
        """A dry run's REGISTRY/REPO:TAG references, one per tag it would push; its digest is
        known only once the registry has the image."""
        if self.status != "planned":
            return []
        return [f"{self.reference}:{tag.tag}" for tag in self.tags if tag.status == "planned"]

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.name,
            **fields_of(self, "reference", "status", "digest", "bytes_uploaded", "seconds"),
            "tags": [vars(tag) for tag in self.tags],
            "notes": self.notes,
            "signed_by": self.signed_by or None,
            "signatures": self.signatures,
            "error": None if self.error is None else self.error.to_json(),
        }


@dataclass
class PushReport:
    image_id: str
    build_id: str
    tags: tuple[str, ...]  # fixed first, then moving
    dry_run: bool
    targets: list[TargetReport]
    # Tag templates with no value for this commit ({version} without a version tag), why.
    skipped_tags: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[TargetReport]:
        return [target for target in self.targets if target.status == "failed"]

    @property
    def delivered(self) -> list[TargetReport]:
        return [target for target in self.targets if target.delivered]

    @property
    def digest(self) -> str:
        """The one manifest digest every registry serves ("" when none was pushed)."""
        digests = {target.digest for target in self.delivered}
        return digests.pop() if len(digests) == 1 else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "image_id": self.image_id,
            "build_id": self.build_id,
            "tags": list(self.tags),
            "skipped_tags": self.skipped_tags,
            "dry_run": self.dry_run,
            "registries": [target.to_json() for target in self.targets],
        }

    def failure(self) -> ShipitError | None:
        """One error for the exit code: the registries' own class when they agree."""
        errors = [target.error for target in self.failed if target.error is not None]
        if not errors:
            return None
        names = ", ".join(target.name for target in self.failed)
        codes = {error.exit_code for error in errors}
        first = errors[0]
        summary = f"push failed for {names}: {first.message}"
        if len(codes) == 1:
            return first.reworded(summary)
        return PushError(summary, "see the report above for each registry")
