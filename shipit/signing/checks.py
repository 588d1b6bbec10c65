"""Whether one stored signature or attestation is by a given public key and speaks of a
given digest: what a push asks before it signs again, and what `shipit verify` reports."""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.hazmat.primitives.asymmetric import ec

from shipit.registries.manifest import Descriptor
from shipit.signing.ecdsa import unb64, verifies
from shipit.signing.layout import IN_TOTO, SIGNATURE_ANNOTATION, pae


def signature_verifies(
    layer: Descriptor, payload: bytes, public_key: ec.EllipticCurvePublicKey
) -> bool:
    """The layer is `payload` (by digest) and its annotation is the key's signature of it."""
    from shipit.digests import sha256_digest

    if layer.digest != sha256_digest(payload):
        return False
    signature = unb64((layer.annotations or {}).get(SIGNATURE_ANNOTATION, ""))
    return signature is not None and verifies(public_key, signature, payload)


def verified_statement(envelope: bytes, public_key: ec.EllipticCurvePublicKey) -> bytes | None:
    """The in-toto statement of a DSSE envelope that the key signed; None otherwise."""
    try:
        document = json.loads(envelope)
        if document.get("payloadType") != IN_TOTO:
            return None
        statement = base64.b64decode(str(document["payload"]), validate=True)
        signatures = [str(each["sig"]) for each in document["signatures"]]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None
    message = pae(IN_TOTO, statement)
    for encoded in signatures:
        signature = unb64(encoded)
        if signature is not None and verifies(public_key, signature, message):
            return statement
    return None


def statement_names(statement: bytes, digest: str) -> bool:
    """The statement's subjects include `digest`."""
    try:
        subjects = json.loads(statement)["subject"]
        hexdigest = digest.removeprefix("sha256:")
        return any(subject["digest"].get("sha256") == hexdigest for subject in subjects)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def statement_key(statement: bytes) -> tuple[str, tuple[str, ...]]:
    """A statement's predicate type and the digests it names: what makes two attestations
    the same one for a push (a later build's provenance has other times, not other
    subjects)."""
    try:
        document = json.loads(statement)
        named = sorted(str(subject["digest"].get("sha256")) for subject in document["subject"])
        return str(document.get("predicateType", "")), tuple(named)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", ()


def predicate_of(statement: bytes) -> tuple[str, dict[str, object]]:
    """The statement's predicate type and predicate ({} when they are not readable)."""
    try:
        document = json.loads(statement)
        predicate = document.get("predicate")
        return str(document.get("predicateType", "")), (
            predicate if isinstance(predicate, dict) else {}
        )
    except (ValueError, AttributeError):
        return "", {}
