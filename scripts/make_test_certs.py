"""Makes a test CA, a server certificate and a client certificate for a TLS Docker engine.

Usage: make_test_certs.py DIR IP

Writes DIR/server/{ca,cert,key}.pem for dockerd (--tlscacert/--tlscert/--tlskey) and
DIR/client/{ca,cert,key}.pem, the layout DOCKER_CERT_PATH expects. For tests only: the CA's
key is thrown away, the certificates last 30 days.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


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


def make(directory: Path, ip: str) -> None:
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
        common_name: str, usage: x509.ObjectIdentifier, ips: list[str]
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
        if ips:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in ips]),
                critical=False,
            )
        return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)

    for role, usage, ips in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [ip, "127.0.0.1"]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        cert, key = leaf(f"shipit test {role}", usage, ips)
        folder = directory / role
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.pem").write_bytes(_cert_pem(ca))
        (folder / "cert.pem").write_bytes(cert)
        key_file = folder / "key.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    make(Path(sys.argv[1]), sys.argv[2])
