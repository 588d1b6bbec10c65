"""cosign's own private key file, as `cosign generate-key-pair` writes it: a PEM block
("ENCRYPTED SIGSTORE PRIVATE KEY", or "ENCRYPTED COSIGN PRIVATE KEY" before cosign 2) whose
body is JSON: a scrypt key derivation (N, r, p, salt) and a NaCl secretbox (XSalsa20-Poly1305,
a nonce) around the PKCS#8 DER private key (go-securesystemslib's `encrypted` package).

scrypt is hashlib's (OpenSSL's); the secretbox is PyNaCl's, which paramiko already brings:
`cryptography` has no XSalsa20, and a hand-made one would be a cipher nobody reviewed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from shipit.errors import SigningError

COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
# The largest scrypt cost accepted (cosign writes N=65536, r=8: 64 MiB); a file asking for
# more would make shipit allocate gigabytes before it could say the password is wrong.
_MAX_SCRYPT_MEMORY = 512 * 1024 * 1024


def _body(data: bytes, where: str) -> dict[str, Any]:
    lines = data.decode("ascii", "replace").strip().splitlines()
    inside = [line for line in lines if line and not line.startswith("-----")]
    try:
        document = json.loads(base64.b64decode("".join(inside), validate=True))
    except (binascii.Error, ValueError) as error:
        raise SigningError(f"{where} is not a readable cosign key") from error
    if not isinstance(document, dict):
        raise SigningError(f"{where} is not a readable cosign key")
    return document


def _field(document: dict[str, Any], where: str, *path: str) -> Any:
    value: Any = document
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise SigningError(f"{where} is not a readable cosign key (no {'.'.join(path)})")
        value = value[name]
    return value


def _bytes(document: dict[str, Any], where: str, *path: str) -> bytes:
    try:
        return base64.b64decode(str(_field(document, where, *path)), validate=True)
    except (binascii.Error, ValueError) as error:
        raise SigningError(f"{where} is not a readable cosign key ({'.'.join(path)})") from error


def decrypt_cosign_key(data: bytes, password: bytes, where: str) -> bytes:
    """The PKCS#8 DER private key inside a cosign.key; a SigningError for a wrong password
    or a file that is not one."""
    import nacl.exceptions
    import nacl.secret

    document = _body(data, where)
    kdf, cipher = _field(document, where, "kdf", "name"), _field(document, where, "cipher", "name")
    if kdf != "scrypt" or cipher != "nacl/secretbox":
        raise SigningError(f"{where} uses {kdf} and {cipher}; shipit reads scrypt and secretbox")
    params = _field(document, where, "kdf", "params")
    try:
        n, r, p = (int(params[name]) for name in ("N", "r", "p"))
    except (KeyError, TypeError, ValueError) as error:
        raise SigningError(f"{where} is not a readable cosign key (kdf.params)") from error
    if n <= 1 or r <= 0 or p <= 0 or 128 * n * r * p > _MAX_SCRYPT_MEMORY // 2:
        raise SigningError(f"{where} asks for a scrypt cost shipit does not accept")
    salt = _bytes(document, where, "kdf", "salt")
    nonce = _bytes(document, where, "cipher", "nonce")
    ciphertext = _bytes(document, where, "ciphertext")
    try:
        secret = hashlib.scrypt(
            password, salt=salt, n=n, r=r, p=p, maxmem=_MAX_SCRYPT_MEMORY, dklen=32
        )
    except ValueError as error:
        raise SigningError(f"{where} asks for a scrypt cost shipit does not accept") from error
    try:
        return nacl.secret.SecretBox(secret).decrypt(ciphertext, nonce)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as error:
        raise SigningError(
            f"cannot decrypt {where}: the password in COSIGN_PASSWORD is wrong",
            "set COSIGN_PASSWORD to the password given to `cosign generate-key-pair`",
        ) from error
