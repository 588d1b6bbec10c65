"""Signing with an AWS KMS key named as cosign names it: `awskms:///KEY` (AWS's endpoint, or
AWS_ENDPOINT_URL) or `awskms://HOST[:PORT]/KEY`, KEY a key id, `alias/NAME` or an ARN. The
private key never leaves KMS; each signature is one `kms:Sign` call through the session of
shipit/aws.py (boto3 stays there).

A message of at most 4096 bytes goes as it is (`MessageType=RAW`, KMS hashes it); a larger
one (a big SBOM's envelope) as its SHA-256 (`DIGEST`), which is the same signature. moto
hashes a DIGEST again, so its signatures of large messages verify only under moto.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shipit.errors import ShipitError, SigningError
from shipit.loopback import is_loopback
from shipit.signing.ecdsa import KMS_SCHEME, p256_only, verifies

if TYPE_CHECKING:
    from shipit.aws import AwsSession

# KMS's limit for MessageType=RAW.
RAW_LIMIT = 4096
_PROBE = b"shipit: can this key sign?"


@dataclass(frozen=True)
class KmsKey:
    """Where an awskms:// key is: its endpoint ("" for the usual one) and its key id."""

    uri: str
    endpoint: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> KmsKey:
        rest = uri.removeprefix(KMS_SCHEME)
        host, _, key = rest.partition("/")
        if not key:
            raise SigningError(
                f"{uri} names no KMS key",
                "write awskms:///alias/NAME, awskms:///KEY-ID or awskms:///arn:aws:kms:...",
            )
        endpoint = ""
        if host:
            bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            endpoint = f"{'http' if is_loopback(bare) else 'https'}://{host}"
        return cls(uri, endpoint, key)

    def region(self, default: str) -> str:
        """The region an ARN names, else `default` (the aws_region setting)."""
        if self.key.startswith("arn:"):
            parts = self.key.split(":")
            if len(parts) > 3 and parts[3]:
                return parts[3]
        return default


def _call(doing: str, call: Callable[[], Any]) -> Any:
    """One KMS call; any AWS failure (a refusal, a missing key) as a SigningError."""
    from shipit.aws import call_aws

    try:
        return call_aws(doing, call)
    except SigningError:
        raise
    except ShipitError as error:
        raise SigningError(error.message, error.hint) from error


@dataclass
class KmsSigner:
    """A KMS key that signs: checked to be an enabled ECC_NIST_P256 SIGN_VERIFY key."""

    description: str
    key: str
    client: Any = field(repr=False)
    public_key: ec.EllipticCurvePublicKey = field(repr=False)

    def sign(self, message: bytes) -> bytes:
        raw = len(message) <= RAW_LIMIT
        answer = _call(
            f"signing with KMS key {self.key}",
            lambda: self.client.sign(
                KeyId=self.key,
                Message=message if raw else hashlib.sha256(message).digest(),
                MessageType="RAW" if raw else "DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            ),
        )
        return bytes(answer["Signature"])


def _client(key: KmsKey, aws_session: Callable[[str], AwsSession], region: str) -> Any:
    session = aws_session(key.region(region))
    return session.client("kms", endpoint_url=key.endpoint or None)


def _public_key(key: KmsKey, client: Any) -> ec.EllipticCurvePublicKey:
    answer = _call(
        f"reading the public key of KMS key {key.key}",
        lambda: client.get_public_key(KeyId=key.key),
    )
    usage = str(answer.get("KeyUsage", ""))
    if usage != "SIGN_VERIFY":
        raise SigningError(
            f"KMS key {key.key} is a {usage or 'non-signing'} key, not SIGN_VERIFY",
            "create the key with --key-usage SIGN_VERIFY --key-spec ECC_NIST_P256",
        )
    spec = str(answer.get("KeySpec") or answer.get("CustomerMasterKeySpec") or "")
    if spec != "ECC_NIST_P256":
        raise SigningError(
            f"KMS key {key.key} is {spec}; shipit signs with ECC_NIST_P256 keys only",
            "create the key with --key-usage SIGN_VERIFY --key-spec ECC_NIST_P256",
        )
    try:
        public = serialization.load_der_public_key(bytes(answer["PublicKey"]))
    except (ValueError, KeyError, TypeError) as error:
        raise SigningError(f"KMS key {key.key} has no readable public key") from error
    p256_only(public, f"KMS key {key.key}")
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return public


def kms_signer(uri: str, aws_session: Callable[[str], AwsSession], region: str) -> KmsSigner:
    """The signer of an awskms:// key, which has just signed a test message: a key that may
    not be used fails here, before anything is pushed."""
    key = KmsKey.parse(uri)
    client = _client(key, aws_session, region)
    public = _public_key(key, client)
    signer = KmsSigner(f"KMS key {key.key}", key.key, client, public)
    if not verifies(public, signer.sign(_PROBE), _PROBE):
        raise SigningError(
            f"KMS key {key.key} signed a test message with a signature its public key rejects",
            "check AWS_ENDPOINT_URL: that endpoint is not AWS KMS",
        )
    return signer


def kms_key_arn(
    uri: str, aws_session: Callable[[str], AwsSession], region: str, account: str, partition: str
) -> str:
    """The ARN of the key an awskms:// URI names, which IAM authorises kms:Sign on: an ARN
    as it is, a key id in `region` of `account`, and an alias (which IAM does not authorise
    on) as KMS resolves it, by the GetPublicKey call that signing makes anyway."""
    key = KmsKey.parse(uri)
    named = key.key
    if named.startswith("alias/") or (named.startswith("arn:") and ":alias/" in named):
        client = _client(key, aws_session, region)
        answer = _call(f"looking up the key of {named}", lambda: client.get_public_key(KeyId=named))
        # AWS answers with the key's ARN; a stand-in may answer with its bare id.
        named = str(answer["KeyId"])
    if named.startswith("arn:"):
        return named
    return f"arn:{partition}:kms:{key.region(region)}:{account}:key/{named}"


def kms_public_key(
    uri: str, aws_session: Callable[[str], AwsSession], region: str
) -> ec.EllipticCurvePublicKey:
    key = KmsKey.parse(uri)
    return _public_key(key, _client(key, aws_session, region))
