"""What a registry request can fail with, and whether it is worth asking again.

`RegistryClient` (distribution.py) raises these; the push's retries (push/retry.py) and its
steps tell them apart by status, registry error code and whether a connection got an answer.
"""

from __future__ import annotations

import requests

from shipit.errors import AuthError, PushError, RegistryUnreachableError

# Registry error codes meaning "there is no such thing", which callers treat as absence.
NOT_FOUND_CODES = frozenset({"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"})


def is_transient_status(status: int) -> bool:
    """True for HTTP statuses worth retrying: throttling, request timeout and server faults.

    Everything else (401, 403, 404, 400 for a bad manifest, 409/400 for an immutable tag)
    will answer the same way next time, so it must fail at once.
    """
    return status in (408, 429) or 500 <= status <= 599


def is_transient(exc: BaseException) -> bool:
    """Whether an error raised by RegistryClient (or by requests) may succeed on retry."""
    if isinstance(exc, RegistryResponseError):
        return is_transient_status(exc.status)
    if isinstance(exc, RegistryConnectionError):
        return exc.transient
    return isinstance(
        exc, requests.Timeout | requests.ConnectionError | requests.exceptions.ChunkedEncodingError
    )


class RegistryResponseError(PushError):
    """A registry answered with a non-2xx status that is neither auth nor absence.

    `code` and `registry_message` are the registry's own error code and words (one line,
    secrets masked), for callers that tell refusals apart, such as an immutable tag.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status: int,
        code: str = "",
        registry_message: str = "",
        retry_after: float | None = None,
        rate_limit: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.code = code
        self.registry_message = registry_message
        # Seconds the registry asked to wait (its Retry-After on a 429 or 503), None if unsaid.
        self.retry_after = retry_after
        # The registry's own rate limit, in words ("100 requests per 6 h, 0 left"), or "".
        self.rate_limit = rate_limit

    @property
    def transient(self) -> bool:
        return is_transient_status(self.status)


class RegistryAuthError(AuthError):
    """A registry (or its token service) answered 401 or 403.

    `registry_message` keeps the registry's own words (one line, secrets masked) out of the
    message, so callers can recognise an expired token or the IAM action ECR names.
    `method` and `url` are the refused request's: ECR answers a HEAD without a body, so its
    IAM action follows only from the request.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status: int,
        registry_message: str = "",
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.registry_message = registry_message
        self.method = method
        self.url = url


class RegistryConnectionError(RegistryUnreachableError):
    """No HTTP answer at all: refused, unresolvable, reset or timed out."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        transient: bool,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message, hint)
        self.transient = transient
        self.timed_out = timed_out
