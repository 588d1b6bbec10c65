"""The pure parts of signing: cosign's layout, DSSE, the cosign.key format, awskms:// names,
and key files that are refused. No engine, no registry (tests/test_signing_cosign.py has the
real pushes that cosign judges)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shipit.attest.statement import Subject, statement
from shipit.errors import SigningError
from shipit.registries.manifest import Descriptor
from shipit.signing.checks import signature_verifies, statement_names, verified_statement
from shipit.signing.ecdsa import b64
from shipit.signing.keys import LocalSigner, load_signer
from shipit.signing.kms import KmsKey
from shipit.signing.layout import (
    IN_TOTO,
    SIGNATURE_ANNOTATION,
    attestation_tag,
    attested_types,
    envelope,
    layers_manifest,
    pae,
    signature_tag,
    signed_digest,
    simple_signing_payload,
)

DIGEST = "sha256:" + "ab" * 32


def test_tags_are_cosigns() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    assert attestation_tag(DIGEST) == "sha256-" + "ab" * 32 + ".att"


def test_pae_is_dsse_v1s_example() -> None:
    # The example of the DSSE v1 protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_the_payload_names_the_digest_and_the_attested_types() -> None:
    payload = simple_signing_payload("127.0.0.1:5000/site", DIGEST, ["b", "a", "a"])
    document = json.loads(payload)
    assert document["critical"] == {
        "identity": {"docker-reference": "127.0.0.1:5000/site"},
        "image": {"docker-manifest-digest": DIGEST},
        "type": "cosign container image signature",
    }
    assert signed_digest(payload) == DIGEST
    assert attested_types(payload) == ("a", "b")
    assert json.loads(simple_signing_payload("r", DIGEST))["optional"] is None
    assert signed_digest(b'{"critical": {"type": "other"}}') is None


def test_a_signature_and_an_envelope_verify_with_their_key_only() -> None:
    signer = LocalSigner("test key", ec.generate_private_key(ec.SECP256R1()))
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    payload = simple_signing_payload("r", DIGEST)
    layer = Descriptor(
        "application/vnd.dev.cosign.simplesigning.v1+json",
        "sha256:" + hashlib.sha256(payload).hexdigest(),
        len(payload),
        annotations={SIGNATURE_ANNOTATION: b64(signer.sign(payload))},
    )
    assert signature_verifies(layer, payload, signer.public_key)
    assert not signature_verifies(layer, payload, other)
    assert not signature_verifies(layer, payload + b" ", signer.public_key)

    made = statement([Subject("r", DIGEST)], "https://example.com/p", {"k": 1})
    signed = envelope(made.statement, b64(signer.sign(pae(IN_TOTO, made.statement))))
    assert verified_statement(signed, signer.public_key) == made.statement
    assert verified_statement(signed, other) is None
    assert statement_names(made.statement, DIGEST)
    assert not statement_names(made.statement, "sha256:" + "cd" * 32)


def test_a_layers_manifest_is_oci_and_hashes_to_its_digest() -> None:
    manifest = layers_manifest(b"{}", [{"mediaType": "x", "digest": DIGEST, "size": 1}])
    assert manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert manifest.raw_digest == manifest.digest
    assert manifest.content["layers"][0]["digest"] == DIGEST


def _cosign_key(tmp_path: Path, password: bytes, der: bytes) -> Path:
    """A cosign.key as `cosign generate-key-pair` writes it (scrypt N=2^15 here, for speed)."""
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = hashlib.scrypt(password, salt=salt, n=2**15, r=8, p=1, maxmem=2**26, dklen=32)
    body = {
        "kdf": {"name": "scrypt", "params": {"N": 2**15, "r": 8, "p": 1}, "salt": b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
        "ciphertext": b64(nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext),
    }
    text = base64.encodebytes(json.dumps(body).encode()).decode()
    path = tmp_path / "cosign.key"
    path.write_text(
        f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{text}"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    return path


def test_a_cosign_key_opens_with_its_password_only(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = _cosign_key(tmp_path, b"sesame", der)
    signer = load_signer(str(path), {"COSIGN_PASSWORD": "sesame"})
    assert signer.public_key.public_numbers() == key.public_key().public_numbers()
    with pytest.raises(SigningError, match="COSIGN_PASSWORD is wrong"):
        load_signer(str(path), {"COSIGN_PASSWORD": "open"})
    with pytest.raises(SigningError, match="COSIGN_PASSWORD is not set"):
        load_signer(str(path), {})
    broken = tmp_path / "broken.key"
    broken.write_text(
        "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\nbm90IGpzb24=\n"
        "-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
    )
    with pytest.raises(SigningError, match="not a readable cosign key"):
        load_signer(str(broken), {"COSIGN_PASSWORD": "x"})


def test_a_relative_key_path_is_the_projects(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    signer = load_signer("keys/k.pem", {}, project_dir=tmp_path)
    assert "keys/k.pem" in signer.description
    assert "PRIVATE" not in repr(signer)


@pytest.mark.parametrize(
    ("uri", "endpoint", "key", "region"),
    [
        ("awskms:///alias/shipit", "", "alias/shipit", "eu-west-1"),
        (
            "awskms:///arn:aws:kms:us-east-2:123456789012:key/abc",
            "",
            "arn:aws:kms:us-east-2:123456789012:key/abc",
            "us-east-2",
        ),
        ("awskms://127.0.0.1:4566/alias/x", "http://127.0.0.1:4566", "alias/x", "eu-west-1"),
        ("awskms://kms.eu-west-1.amazonaws.com/k", "https://kms.eu-west-1.amazonaws.com", "k", ""),
    ],
)
def test_kms_names_as_cosign_writes_them(uri: str, endpoint: str, key: str, region: str) -> None:
    parsed = KmsKey.parse(uri)
    assert (parsed.endpoint, parsed.key) == (endpoint, key)
    if region:
        assert parsed.region("eu-west-1") == region


def test_a_kms_name_without_a_key_is_refused() -> None:
    with pytest.raises(SigningError, match="names no KMS key"):
        KmsKey.parse("awskms:///")
