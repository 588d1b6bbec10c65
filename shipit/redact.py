"""Keeps secrets out of everything shipit prints or logs.

Registry passwords and tokens are registered here the moment shipit reads them; every line
the CLI writes (including --debug tracebacks) passes through `redact`.
"""

from __future__ import annotations

import threading

MASK = "***"
# Short values (an empty or one-letter password) would mask ordinary words everywhere.
_MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
