"""Why a registry request failed, in one line with a hint: the registry's error body, its
refusal of the credentials, its rate limit and Retry-After, or a connection that got no answer.

`FailureDiagnosis` is the part of `RegistryClient` (distribution.py) that builds its errors;
they never carry the client's password or tokens (`_clean`).
"""

from __future__ import annotations

import datetime
import email.utils
import re
import socket
import threading
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import requests

from shipit.registries.challenge import BearerToken, parse_challenge
from shipit.registries.errors import (
    RegistryAuthError,
    RegistryConnectionError,
    RegistryResponseError,
    is_transient_status,
)
from shipit.registries.transport import exception_chain

if TYPE_CHECKING:
    from shipit.registries.transport import RegistryTransport

_MAX_MESSAGE = 200


def parse_retry_after(value: str, now: datetime.datetime | None = None) -> float | None:
    """Seconds a `Retry-After` value asks to wait (RFC 9110: delay-seconds or an HTTP-date),
    0 for a date in the past, None when the value is neither."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - now).total_seconds())


def _window(seconds: int) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def describe_rate_limit(limit: str, remaining: str) -> str:
    """Docker Hub's `ratelimit-limit` / `ratelimit-remaining` (e.g. "100;w=21600"), in
    words: "100 requests per 6 h, 0 left"; "" when there is no limit header."""

    def parsed(value: str) -> tuple[str, int | None]:
        count, _, rest = value.strip().partition(";")
        window = re.search(r"\bw=(\d+)", rest)
        return count.strip(), int(window.group(1)) if window else None

    count, window = parsed(limit)
    if not count.isdigit():
        return ""
    text = f"{count} requests" + (f" per {_window(window)}" if window else "")
    left, _ = parsed(remaining)
    return f"{text}, {left} left" if left.isdigit() else text


class FailureDiagnosis:
    """The errors of a `RegistryClient`, from what it knows of itself: its host, user, hint,
    transport and the secrets that must not show."""

    display_host: str
    username: str | None
    auth_hint: str
    timeout: float
    transport: RegistryTransport
    _password: str | None
    _tokens: dict[str, BearerToken]
    _lock: threading.Lock

    @staticmethod
    def _scope_detail(response: requests.Response) -> str:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is not None and challenge.param("error") == "insufficient_scope":
            # Docker Hub answers so for a repository the user may not see or that does not
            # exist; both read the same to the user.
            return f"no access to {challenge.scope or 'the repository'}"
        return ""

    def _error_body(self, response: requests.Response) -> tuple[str, str]:
        """(code, message) of the first entry in a registry error body, or ("", "")."""
        try:
            body = response.json()
        except ValueError:
            return "", ""
        errors = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
            return "", ""
        code = str(errors[0].get("code") or "")
        message = str(errors[0].get("message") or "")
        return code, self._clean(message)

    def _clean(self, text: str) -> str:
        """One line, bounded, and free of this client's secrets even if a server echoes them."""
        text = " ".join(text.split())
        secrets = [self._password] if self._password else []
        with self._lock:
            secrets.extend(token.value for token in self._tokens.values())
        for secret in secrets:
            text = text.replace(secret, "***")
        return text[:_MAX_MESSAGE]

    def _auth_error(
        self, status: int, detail: str = "", *, response: requests.Response
    ) -> RegistryAuthError:
        if self.username is None:
            message = f"registry {self.display_host} requires credentials and none were given"
        elif status == 403:
            message = f"registry {self.display_host} denied access to user {self.username!r}"
        else:
            message = (
                f"registry {self.display_host} refused the credentials for user {self.username!r}"
            )
        if detail:
            message = f"{message}, {detail}"
        _, registry_message = self._error_body(response)
        return RegistryAuthError(
            self._clean(f"{message} ({status})"),
            self.auth_hint,
            status=status,
            registry_message=registry_message,
            method=response.request.method or "",
            url=urlsplit(response.request.url or "").path,
        )

    def _response_error(self, response: requests.Response, what: str) -> RegistryResponseError:
        status = response.status_code
        code, message = self._error_body(response)
        reason = ": ".join(part for part in (code, message) if part) or (response.reason or "")
        text = f"registry {self.display_host} answered {status} to {_request_name(what)}"
        if reason:
            text = f"{text} ({self._clean(reason)})"
        rate_limit = describe_rate_limit(
            response.headers.get("ratelimit-limit", ""),
            response.headers.get("ratelimit-remaining", ""),
        )
        if rate_limit:
            text = f"{text}; its rate limit: {rate_limit}"
        if status == 429:
            hint = (
                "the registry limits how often it may be asked; wait for the limit to reset, "
                "or use an account with a higher limit"
            )
        elif is_transient_status(status):
            hint = "the registry is overloaded or failing; retry later"
        elif code in _UPLOAD_HINTS:
            hint = _UPLOAD_HINTS[code]
        elif status == 404:
            hint = "check the repository name (and create it first for ECR)"
        else:
            hint = ""
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After", ""))
        return RegistryResponseError(
            text,
            hint,
            status=status,
            code=code,
            registry_message=message,
            retry_after=retry_after,
            rate_limit=rate_limit,
        )

    def _connection_error(
        self, exc: requests.RequestException, where: str, role: str, timeout: float | None = None
    ) -> RegistryConnectionError:
        # The engine's TLS rules are about the registry's own host, not a CDN or token host.
        own = not role and where == self.display_host
        tls = self.transport.tls_failure(exception_chain(exc)) if own else None
        if tls is not None:
            return RegistryConnectionError(tls.message, tls.hint, transient=False)
        reason, transient = _describe_connection_failure(exc, timeout or self.timeout)
        if role:
            target = f"the {role} registry {self.display_host} ({where})"
        else:
            target = f"registry {where}"
        hint = {
            "connection refused": "check that the registry is running and that host and "
            "port are right",
            "host name not found": "check the registry host name and DNS",
            "TLS handshake failed": "check the registry's certificate and that it speaks https",
        }.get(reason, "check the network path to the registry, then retry")
        return RegistryConnectionError(
            f"cannot reach {target}: {reason}",
            hint,
            transient=transient,
            timed_out=reason.startswith("no answer within"),
        )


_UPLOAD_HINTS = {
    "DIGEST_INVALID": "the bytes the registry received do not hash to the blob's digest: "
    "something on the way (a proxy) changed them; push again",
    "SIZE_INVALID": "the registry received another size than the blob's; push again",
    "BLOB_UPLOAD_INVALID": "the registry dropped the upload session; push again",
    "BLOB_UPLOAD_UNKNOWN": "the registry dropped the upload session; push again",
}


def _request_name(what: str) -> str:
    """A request as an error names it. A blob upload's URL carries the registry's upload
    state (the session's id, `_state=...`: hundreds of characters, of use to no one), so
    it is named by the blob's digest instead."""
    method, _, url = what.partition(" ")
    path, _, query = url.partition("?")
    if "/blobs/uploads/" not in path:
        return what
    repository = urlsplit(path).path.removeprefix("/v2/").split("/blobs/uploads/")[0]
    fields = parse_qs(query)
    digest = (fields.get("digest") or fields.get("mount") or [""])[0]
    blob = f"for {digest[:19]}… " if digest else ""
    return f"{method} of the blob upload {blob}to {repository}"


def _describe_connection_failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A short reason, and whether retrying makes sense."""
    chain = exception_chain(exc)
    if isinstance(exc, requests.Timeout) or any(isinstance(e, TimeoutError) for e in chain):
        return f"no answer within {timeout:g} s", True
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused", True
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "host name not found", False
    if any(isinstance(e, ConnectionResetError | ConnectionAbortedError) for e in chain):
        return "connection reset", True
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed", False
    text = " ".join(str(e) for e in chain)
    if "RemoteDisconnected" in text or "reset" in text.lower():
        return "connection reset", True
    return type(exc).__name__, True
