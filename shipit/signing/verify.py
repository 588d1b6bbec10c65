"""`shipit verify REF --key PUB`: whether a pushed image carries a signature and attestations
that a public key verifies, as `cosign verify` and `cosign verify-attestation` check them,
and whether this digest passed shipit's smoke test (its attestation, when attached).

The registry is read with the credentials cosign would use (DOCKER_CONFIG's config.json, its
credential helpers), else anonymously. An index is checked as a whole and each platform's
manifest in it too: a deployer may pull either digest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from shipit.attest.statement import SMOKE_TEST_V1
from shipit.errors import UnverifiedError
from shipit.reference import parse_reference
from shipit.registries.credentials import stored_credentials
from shipit.registries.distribution import RegistryClient
from shipit.signing.checks import (
    predicate_of,
    signature_verifies,
    statement_names,
    verified_statement,
)
from shipit.signing.ecdsa import key_id
from shipit.signing.layout import (
    DSSE_ENVELOPE,
    PREDICATE_TYPE_ANNOTATION,
    attestation_tag,
    signature_tag,
    signed_digest,
)

_BLOB_LIMIT = 64 * 1024 * 1024


@dataclass
class DigestCheck:
    """What the key verifies for one digest."""

    digest: str
    platform: str = ""
    signed: bool = False
    attested: list[str] = field(default_factory=list)
    smoke: dict[str, Any] | None = None  # the verified smoke predicate, if attached

    def to_json(self) -> dict[str, Any]:
        smoke = self.smoke
        return {
            "digest": self.digest,
            "platform": self.platform or None,
            "signed": self.signed,
            "attested": self.attested,
            "smoke_test": None
            if smoke is None
            else {
                "passed": bool(smoke.get("passed")),
                "at": smoke.get("testedAt"),
                "url": smoke.get("url"),
                "platform": smoke.get("platform"),
                "checks": smoke.get("checks", []),
            },
        }


@dataclass
class VerifyReport:
    reference: str
    key_id: str
    required: tuple[str, ...]
    checks: list[DigestCheck]

    @property
    def missing(self) -> list[str]:
        """What a digest lacks: its signature, or a required attestation."""
        lacking = []
        for check in self.checks:
            name = check.digest[:19] + (f" ({check.platform})" if check.platform else "")
            if not check.signed:
                lacking.append(f"{name}: no signature by this key")
            for kind in self.required:
                if kind not in check.attested:
                    lacking.append(f"{name}: no {kind} attestation by this key")
        return lacking

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def smoke_tested(self) -> bool | None:
        """Whether the image's digest passed shipit's smoke test (None: no such attestation)."""
        smoke = self.checks[0].smoke if self.checks else None
        return None if smoke is None else bool(smoke.get("passed"))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "digest": self.checks[0].digest if self.checks else None,
            "key_id": self.key_id,
            "smoke_tested": self.smoke_tested,
            "required": list(self.required),
            "digests": [check.to_json() for check in self.checks],
            "missing": self.missing,
        }

    def failure(self) -> UnverifiedError | None:
        if self.ok:
            return None
        return UnverifiedError(
            f"{self.reference} does not verify with key {self.key_id[:19]}: "
            + "; ".join(self.missing),
            "check the key (the public half of the signing_key), and that the image was "
            "pushed with signing_key set",
        )


def _check_digest(
    client: RegistryClient,
    repository: str,
    digest: str,
    public_key: ec.EllipticCurvePublicKey,
    platform: str = "",
) -> DigestCheck:
    check = DigestCheck(digest, platform)
    signatures = client.find_manifest(repository, signature_tag(digest))
    for layer in signatures.layers() if signatures is not None else ():
        if layer.size > _BLOB_LIMIT:
            continue
        payload = client.read_blob(repository, layer.digest, _BLOB_LIMIT, size=layer.size)
        if signed_digest(payload) == digest and signature_verifies(layer, payload, public_key):
            check.signed = True
            break
    attestations = client.find_manifest(repository, attestation_tag(digest))
    for layer in attestations.layers() if attestations is not None else ():
        annotated = (layer.annotations or {}).get(PREDICATE_TYPE_ANNOTATION, "")
        if layer.media_type != DSSE_ENVELOPE or not annotated or layer.size > _BLOB_LIMIT:
            continue
        envelope = client.read_blob(repository, layer.digest, _BLOB_LIMIT, size=layer.size)
        statement = verified_statement(envelope, public_key)
        if statement is None or not statement_names(statement, digest):
            continue
        kind, predicate = predicate_of(statement)
        if kind and kind not in check.attested:
            check.attested.append(kind)
        if kind == SMOKE_TEST_V1 and check.smoke is None:
            check.smoke = predicate
    return check


def verify_image(
    reference: str,
    public_key: ec.EllipticCurvePublicKey,
    required: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> VerifyReport:
    """Checks the image `reference` (REGISTRY/REPO:TAG or @DIGEST) names."""
    parsed = parse_reference(reference)
    if not parsed.domain:
        parsed = parse_reference(f"docker.io/{reference}")
    host = parsed.domain
    repository = parsed.path
    login = stored_credentials(host, os.environ if environ is None else environ)
    client = RegistryClient(host, login)
    try:
        manifest = client.get_manifest(repository, parsed.digest or parsed.tag or "latest")
        checks = [_check_digest(client, repository, manifest.digest, public_key)]
        for entry in manifest.entries():
            if not entry.is_attestation:
                checks.append(
                    _check_digest(client, repository, entry.digest, public_key, entry.platform_name)
                )
    finally:
        client.close()
    return VerifyReport(str(parsed), key_id(public_key), tuple(required), checks)
