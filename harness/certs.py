"""A test CA with a server and a client certificate, for TLS engines and TLS registries.

make_certs(DIR, names) writes DIR/server/{ca,cert,key}.pem (a server certificate for the
given IP addresses and host names) and DIR/client/{ca,cert,key}.pem (a client certificate,
the layout DOCKER_CERT_PATH expects), both signed by one CA. For tests only: the CA's key
is thrown away, the certificates last 30 days.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFolder:
    """One role's folder: the CA, its certificate and its key, in PEM."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"


@dataclass(frozen=True)
class CertificateSet:
    server: CertFolder
    client: CertFolder


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _subject_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_certs(directory: Path, names: Sequence[str]) -> CertificateSet:
    """A fresh CA; a server certificate for `names` (addresses or host names) and a client
    certificate, both signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("shipit test CA"))
        .issuer_name(_name("shipit test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, names: Sequence[str]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_subject_name(name) for name in names]),
                critical=False,
            )
        return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)

    folders = []
    for role, usage, sans in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, names),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, ()),
    ):
        cert, key = leaf(f"shipit test {role}", usage, sans)
        folder = CertFolder(directory / role)
        folder.folder.mkdir(parents=True, exist_ok=True)
        folder.ca.write_bytes(_cert_pem(ca))
        folder.cert.write_bytes(cert)
        folder.key.touch(mode=0o600)
        folder.key.write_bytes(key)
        folders.append(folder)
    return CertificateSet(server=folders[0], client=folders[1])
