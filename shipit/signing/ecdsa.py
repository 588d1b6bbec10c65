"""ECDSA P-256 as every shipit signer and verifier uses it: the one curve accepted, the
signature over a message's SHA-256, a key's printable id, base64 as cosign writes it."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shipit.digests import sha256_digest
from shipit.errors import SigningError

KMS_SCHEME = "awskms://"
KEY_HINT = (
    "make one with `cosign generate-key-pair` or `openssl genpkey -algorithm EC -pkeyopt "
    "ec_paramgen_curve:P-256`, or name a KMS key as awskms:///alias/NAME"
)


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """A short name of the public key (sha256 of its DER form) that reports may print."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256_digest(der)


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verifies(public_key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def p256_only(key: object, where: str) -> None:
    """Refuses every key but ECDSA P-256: cosign's default, and what KMS and the PEM and
    cosign.key files all hold."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        raise SigningError(
            f"{where} is an RSA key; shipit signs with ECDSA P-256 keys only", KEY_HINT
        )
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise SigningError(
            f"{where} is a {type(key).__name__.removeprefix('_')} key; shipit signs with "
            "ECDSA P-256 keys only",
            KEY_HINT,
        )
    if not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(
            f"{where} is an ECDSA key on curve {key.curve.name}; shipit signs with P-256 only",
            KEY_HINT,
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
