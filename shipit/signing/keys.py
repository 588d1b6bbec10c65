"""The key an image is signed with, from the signing_key setting: a PEM private key file
(ECDSA P-256, PKCS#8 or SEC1, encrypted or not, as `openssl genpkey` writes it), cosign's own
`cosign.key`, or `awskms:///KEY` (signing/kms.py). Every signer signs a message with ECDSA
over its SHA-256, DER-encoded: what cosign verifies with the matching public key.

A key's bytes and its passphrase stay in this process: no message names them, and the
passphrase is read from the environment only (SHIPIT_SIGNING_PASSWORD for a PEM key,
COSIGN_PASSWORD for a cosign.key, as cosign itself reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shipit.errors import SigningError
from shipit.redact import register_secret
from shipit.signing.cosign_key import COSIGN_PEM_TYPES, decrypt_cosign_key
from shipit.signing.ecdsa import KEY_HINT, KMS_SCHEME, p256_only

if TYPE_CHECKING:
    from shipit.aws import AwsSession

PEM_PASSWORD_VARIABLE = "SHIPIT_SIGNING_PASSWORD"  # noqa: S105 - a variable name
COSIGN_PASSWORD_VARIABLE = "COSIGN_PASSWORD"  # noqa: S105 - a variable name


class Signer(Protocol):
    """Something that signs with an ECDSA P-256 key it may not show."""

    @property
    def description(self) -> str:
        """Where the key is (a file, a KMS key id): never the key itself."""

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, message: bytes) -> bytes:
        """The DER ECDSA signature of the message's SHA-256."""


@dataclass(frozen=True)
class LocalSigner:
    """A private key held in memory, read from a file."""

    description: str
    private_key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"LocalSigner({self.description!r})"

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message, ec.ECDSA(hashes.SHA256()))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SigningError(
            f"cannot read the {what} {path}: {error.strerror or error}",
            "check the signing_key setting (SHIPIT_SIGNING_KEY, --signing-key) and the file",
        ) from error


def _pem_type(data: bytes) -> str:
    """The label of the first PEM block ("PRIVATE KEY"...), "" when there is none."""
    marker = b"-----BEGIN "
    start = data.find(marker)
    if start < 0:
        return ""
    end = data.find(b"-----", start + len(marker))
    return data[start + len(marker) : end].decode("ascii", "replace") if end > 0 else ""


def _pem_private_key(data: bytes, where: str, environ: Mapping[str, str]) -> LocalSigner:
    passphrase = environ.get(PEM_PASSWORD_VARIABLE)
    register_secret(passphrase)
    encrypted = _pem_type(data) == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and not passphrase:
        raise SigningError(
            f"{where} is encrypted and {PEM_PASSWORD_VARIABLE} is not set",
            f"set {PEM_PASSWORD_VARIABLE} to its passphrase",
        )
    try:
        key = serialization.load_pem_private_key(
            data, passphrase.encode() if encrypted and passphrase else None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        if encrypted:
            raise SigningError(
                f"cannot decrypt {where}: the passphrase in {PEM_PASSWORD_VARIABLE} is wrong",
                f"set {PEM_PASSWORD_VARIABLE} to the passphrase the key was encrypted with",
            ) from error
        raise SigningError(f"{where} is not a readable private key", KEY_HINT) from error
    p256_only(key, where)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return LocalSigner(where, key)


def _cosign_private_key(data: bytes, where: str, environ: Mapping[str, str]) -> LocalSigner:
    if COSIGN_PASSWORD_VARIABLE not in environ:
        raise SigningError(
            f"{where} is a cosign key and {COSIGN_PASSWORD_VARIABLE} is not set",
            f"set {COSIGN_PASSWORD_VARIABLE} to its password (empty if it has none)",
        )
    register_secret(environ[COSIGN_PASSWORD_VARIABLE])
    der = decrypt_cosign_key(data, environ[COSIGN_PASSWORD_VARIABLE].encode(), where)
    try:
        key = serialization.load_der_private_key(der, None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise SigningError(f"{where} holds no readable private key", KEY_HINT) from error
    p256_only(key, where)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return LocalSigner(where, key)


def load_signer(
    value: str,
    environ: Mapping[str, str],
    aws_session: Callable[[str], AwsSession] | None = None,
    *,
    project_dir: Path | None = None,
    region: str = "",
) -> Signer:
    """The signer the signing_key setting names. `aws_session(region)` makes the AWS session
    a KMS key is used through; a relative path is the project's."""
    if value.startswith(KMS_SCHEME):
        from shipit.signing.kms import kms_signer

        if aws_session is None:
            raise SigningError(f"{value}: a KMS key needs AWS here", "use a key file instead")
        return kms_signer(value, aws_session, region)
    path = Path(value).expanduser()
    if project_dir is not None and not path.is_absolute():
        path = project_dir / path
    where = f"signing key {path}"
    data = _read(path, "signing key")
    kind = _pem_type(data)
    if kind in COSIGN_PEM_TYPES:
        return _cosign_private_key(data, where, environ)
    if kind.endswith("PRIVATE KEY"):
        return _pem_private_key(data, where, environ)
    if kind == "PUBLIC KEY":
        raise SigningError(
            f"{where} is a public key; signing needs the private key",
            "name the private key (cosign.key), and give the public one to `shipit verify`",
        )
    raise SigningError(f"{where} is not a PEM private key", KEY_HINT)


def load_public_key(
    value: str,
    aws_session: Callable[[str], AwsSession] | None = None,
    *,
    region: str = "",
) -> ec.EllipticCurvePublicKey:
    """The public key `shipit verify --key` names: a PEM file (cosign.pub) or awskms://."""
    if value.startswith(KMS_SCHEME):
        from shipit.signing.kms import kms_public_key

        if aws_session is None:
            raise SigningError(f"{value}: a KMS key needs AWS here", "use a PEM public key")
        return kms_public_key(value, aws_session, region)
    path = Path(value).expanduser()
    where = f"public key {path}"
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise SigningError(
            f"{where} is not a PEM public key",
            "give the public key (cosign.pub, or `openssl pkey -pubout` of the private key)",
        ) from error
    p256_only(key, where)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key
