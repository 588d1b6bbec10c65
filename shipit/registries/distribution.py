"""A small client for the OCI Distribution (Docker Registry v2) HTTP API.

The Docker engine pushes images; this module asks a registry what it holds: the digest a tag
points at, an image's config digest (equal to the local image ID), whether a blob exists,
the tags of a repository. That is what lets shipit verify a push (the pushed digest is the
one the registry serves) and skip work that is already done, for ECR, Docker Hub and any
Distribution-compatible registry alike. Its writes are a manifest PUT, which points another
tag at a manifest the registry already serves, without the engine's second push, and the
blob uploads of a push that shipit makes itself (shipit/push/blobs.py).

Authentication follows the registry's `WWW-Authenticate` challenge, as the engine does:
`Basic` (ECR, htpasswd registries) sends the credentials on every request; `Bearer` (Docker
Hub, token-auth registries) trades them at the challenge's realm for a short-lived token per
scope. Neither the password nor a token ever appears in an exception, a log line or a repr.

Credentials go to the registry's own origin only (the scheme, host and port the client was
made for). A redirect to a CDN (Docker Hub, GHCR) and an upload `Location` on another host
(ECR, S3-backed registries, presigned URLs) are sent no Authorization at all; such a host gets
credentials only when it asks with a challenge of its own. Redirects are followed here, not by
requests, so that this rule is in one place; ~/.netrc is never consulted.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from shipit import __version__
from shipit.errors import AuthError, PushError, RegistryUnreachableError
from shipit.redact import register_secret
from shipit.registries.credentials import Credentials
from shipit.registries.transport import (
    RegistryRules,
    RegistryTransport,
    exception_chain,
    transport_for,
)

log = logging.getLogger(__name__)

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join((DOCKER_MANIFEST_V2, OCI_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX))
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API_HOST = "registry-1.docker.io"

# Registry error codes meaning "there is no such thing", which callers treat as absence.
NOT_FOUND_CODES = frozenset({"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"})

DEFAULT_AUTH_HINT = (
    "check the user name and password for this registry "
    "(DOCKERHUB_TOKEN for Docker Hub; for ECR a fresh token from ecr get-authorization-token)"
)

# A token is dropped this long before it expires, so it cannot expire in flight.
_TOKEN_EXPIRY_MARGIN = 10.0
# Docker's token spec: a token without expires_in is valid for 60 seconds.
_DEFAULT_TOKEN_LIFETIME = 60.0
_MAX_MESSAGE = 200
# Redirects followed for one request; Docker Hub's blob reads need one.
_MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


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


# ---------------------------------------------------------------------------------------
# Hosts and challenges (pure functions, unit-testable without a network)
# ---------------------------------------------------------------------------------------


def api_host(host: str) -> str:
    """The host that serves the v2 API: Docker Hub's user-facing names are not it."""
    host = host.strip().rstrip("/")
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    return DOCKER_HUB_API_HOST if host.lower() in DOCKER_HUB_ALIASES else host


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, lower case, the port spelled out when it is the default."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs name the same scheme, host and port: the only test of whether a
    request may carry the registry's credentials. Another port or plain http is another
    origin, as browsers and Go's http.Client treat it."""
    return origin(url) == origin(other)


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


@dataclass(frozen=True)
class Challenge:
    """One parsed `WWW-Authenticate` challenge: its scheme (lower case) and parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")

    @property
    def error(self) -> str:
        return self.params.get("error", "")


# auth-param = token "=" ( token / quoted-string )  (RFC 7235); the quoted form may hold
# commas, as scope="repository:a/b:pull,push" does, so it cannot be split on commas.
_PARAM = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)'
)
_SCHEME = re.compile(r"\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in a `WWW-Authenticate` value, in order.

    Tolerant on purpose: an unparseable tail ends the list instead of raising, because a
    registry's odd header must not hide its status code from the user.
    """
    challenges: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        while pos < len(text) and text[pos] in ", ":
            pos += 1
        scheme_match = _SCHEME.match(text, pos)
        if not scheme_match:
            break
        scheme = scheme_match.group(1).lower()
        pos = scheme_match.end()
        params: dict[str, str] = {}
        while pos < len(text):
            param_match = _PARAM.match(text, pos)
            if not param_match:
                break
            name, value = param_match.group(1).lower(), param_match.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[name] = value
            pos = param_match.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def parse_challenge(header: str) -> Challenge | None:
    """The challenge shipit answers: Bearer if offered, else Basic, else the first one."""
    challenges = parse_challenges(header)
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return challenges[0] if challenges else None


def repository_scope(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


# ---------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry serves it: `raw` holds its exact bytes (empty when the
    manifest was not fetched from a registry)."""

    digest: str
    media_type: str
    content: dict[str, Any]
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def raw_digest(self) -> str:
        """The digest of the exact bytes: what a registry must answer when they are PUT."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES or "manifests" in self.content

    @property
    def config_digest(self) -> str | None:
        config = self.content.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            return str(config["digest"])
        return None


@dataclass
class _Token:
    value: str
    expires_at: float

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at - _TOKEN_EXPIRY_MARGIN


class RegistryClient:
    """Access to one registry's v2 API: reads, and put_manifest to point a tag at a manifest.

    `host` is what users write ("127.0.0.1:5001", "docker.io",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com"). `auth_hint` is the "what to do" of an
    AuthError, so the ECR and Docker Hub callers can name their own credentials.
    One client per thread: the token cache is locked, but requests.Session is not
    guaranteed to be thread-safe.
    """

    def __init__(
        self,
        host: str,
        login: Credentials | None = None,
        *,
        timeout: float = 30.0,
        scheme: str | None = None,
        auth_hint: str = DEFAULT_AUTH_HINT,
        session: requests.Session | None = None,
        rules: RegistryRules | None = None,
    ) -> None:
        self.host = api_host(host)
        self.display_host = host.strip().rstrip("/") or self.host
        self.username = (login.username if login else "") or None
        self._password = (login.password if login else "") or None
        # What `docker login` stores for registries that log in with OAuth2: a refresh
        # token, traded at the token service for access tokens (never sent as a password).
        self._identity_token = (login.identity_token if login else "") or None
        self.timeout = timeout
        # The engine's rules for this host (`rules`: its `docker info`; docker's defaults
        # without one): https verified with certs.d, or, for an insecure registry, https
        # unverified or http, found out by the first request.
        self.transport: RegistryTransport = transport_for(self.host, rules)
        self._scheme = scheme or (None if len(self.transport.schemes) > 1 else "https")
        self.auth_hint = auth_hint
        self._session = self.transport.session(session)
        self._session.headers["User-Agent"] = f"shipit/{__version__}"
        # Learned from the first challenge; later requests answer it up front.
        self._challenge: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()
        register_secret(self._password)
        register_secret(self._identity_token)

    def __repr__(self) -> str:
        secret = "***" if self._password else None
        return (
            f"RegistryClient(host={self.host!r}, username={self.username!r}, "
            f"password={secret!r}, scheme={self._scheme!r})"
        )

    @property
    def scheme(self) -> str:
        """https or http, as the engine's rules give this host (asked once)."""
        if self._scheme is None:
            try:
                self._scheme = self.transport.pick_scheme(self._session, self.timeout)
            except requests.RequestException as exc:
                raise self._connection_error(exc, self.display_host, "") from exc
        return self._scheme

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def use_credentials(self, login: Credentials) -> None:
        """Replace the credentials (a renewed ECR token, say); tokens got with the old ones go."""
        self.username = login.username or None
        self._password = login.password or None
        self._identity_token = login.identity_token or None
        register_secret(self._password)
        register_secret(self._identity_token)
        with self._lock:
            self._tokens.clear()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------

    def ping(self) -> None:
        """Reach the registry and prove the credentials (or anonymous access) work."""
        self._request("GET", "/v2/", scope="")

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest `reference` (a tag or digest) resolves to, or None when absent."""
        repository = self._repository(repository)
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._request(
            "HEAD",
            path,
            scope=repository_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT},
            absent_ok=True,
        )
        if response is None:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        # Some registries (and proxies in front of them) drop the header on HEAD; the
        # digest is by definition the sha256 of the exact bytes served.
        manifest = self._fetch_manifest(repository, reference)
        return None if manifest is None else manifest.digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest `reference` resolves to; RegistryResponseError (404) when absent."""
        repository = self._repository(repository)
        manifest = self._fetch_manifest(repository, reference)
        if manifest is None:
            raise RegistryResponseError(
                f"registry {self.display_host} has no manifest {repository}:{reference}",
                "push the image first, or check the repository and tag",
                status=404,
                code="MANIFEST_UNKNOWN",
            )
        return manifest

    def image_config(self, repository: str, manifest: Manifest) -> dict[str, Any]:
        """The image config that `manifest` names (labels, created time, diff ids), checked
        against its digest; {} for a manifest that names no config (an index)."""
        digest = manifest.config_digest
        if digest is None:
            return {}
        repository = self._repository(repository)
        response = self._request(
            "GET", f"/v2/{repository}/blobs/{digest}", scope=repository_scope(repository)
        )
        assert response is not None  # only absent_ok requests answer None
        computed = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if computed != digest:
            raise PushError(
                f"registry {self.display_host} served the config {repository}@{digest} with "
                f"content that hashes to {computed}",
                "retry; if it persists the registry storage is damaged",
            )
        return self._json(response, what=f"image config {repository}@{digest}")

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store `manifest`'s exact bytes under `reference` (a tag); returns the digest the
        registry answers in Docker-Content-Digest ("" when it sends none)."""
        if not manifest.raw:
            raise ValueError("put_manifest needs the manifest's bytes as a registry served them")
        repository = self._repository(repository)
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=repository_scope(repository, "pull,push"),
            headers={"Content-Type": manifest.media_type},
            body=manifest.raw,
        )
        assert response is not None  # only absent_ok requests answer None
        return response.headers.get("Docker-Content-Digest", "")

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob the repository holds, None when it holds none."""
        repository = self._repository(repository)
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=repository_scope(repository, "pull,push"),
            absent_ok=True,
        )
        if response is None:
            return None
        return int(response.headers.get("Content-Length") or -1)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        content: IO[bytes],
        size: int,
        *,
        timeout: float | None = None,
        location: str | None = None,
    ) -> None:
        """Uploads a blob as the engine does: one upload session, the bytes in one PATCH,
        then the PUT that names the digest, which the registry checks against the bytes.
        `timeout`: how long the registry may take no bytes and send none; `location`: an
        upload session already open (a declined mount's)."""
        repository = self._repository(repository)
        scope = repository_scope(repository, "pull,push")
        if location is None:
            location = self._start_upload(repository, timeout=timeout)
        patched = self._request(
            "PATCH",
            location,
            scope=scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=content,
            timeout=timeout,
        )
        assert patched is not None
        location = self._upload_location(patched)
        separator = "&" if "?" in location else "?"
        finished = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            scope=scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": "0"},
            timeout=timeout,
        )
        assert finished is not None
        answered = finished.headers.get("Docker-Content-Digest", digest)
        if answered != digest:
            raise PushError(
                f"registry {self.display_host} stored the blob {digest[:19]} of "
                f"{repository} as {answered[:19]}",
                "push again; if it persists the registry rewrites blobs",
            )

    def mount_blob(
        self, repository: str, digest: str, source: str, *, timeout: float | None = None
    ) -> str | None:
        """Asks the registry to mount a blob that its repository `source` holds into
        `repository`: None when mounted (201), else the Location of the upload session to
        send the bytes to (a registry that declines answers 202 with one; a refused pull of
        `source` gets a plain upload session)."""
        repository = self._repository(repository)
        source = self._repository(source)
        # A Bearer token for a mount must grant the pull of the source as well.
        scope = f"{repository_scope(repository, 'pull,push')} {repository_scope(source)}"
        try:
            answered = self._request(
                "POST",
                f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
                scope=scope,
                timeout=timeout,
            )
        except (RegistryAuthError, RegistryResponseError) as error:
            if is_transient(error):
                raise
            # No pull of the source, or a registry that refuses mounts: the POST without
            # them opens the session, or fails as it would have without the mount.
            return self._start_upload(repository, timeout=timeout)
        assert answered is not None  # only absent_ok requests answer None
        if answered.status_code == 201:
            return None
        return self._upload_location(answered)

    # -- internals -----------------------------------------------------------------------

    def _start_upload(self, repository: str, *, timeout: float | None) -> str:
        started = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope=repository_scope(repository, "pull,push"),
            timeout=timeout,
        )
        assert started is not None  # only absent_ok requests answer None
        return self._upload_location(started)

    def _upload_location(self, response: requests.Response) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise PushError(
                f"registry {self.display_host} started a blob upload without a Location",
                "check that the host is a container registry",
            )
        return urljoin(response.url, location)

    def _repository(self, repository: str) -> str:
        repository = repository.strip("/")
        # Docker Hub's official images live under library/, as the engine assumes.
        if self.host == DOCKER_HUB_API_HOST and "/" not in repository:
            repository = f"library/{repository}"
        return repository

    def _fetch_manifest(self, repository: str, reference: str) -> Manifest | None:
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=repository_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT},
            absent_ok=True,
        )
        if response is None:
            return None
        computed = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if reference.startswith("sha256:") and computed != reference:
            # A content-addressed fetch that does not hash to its address is corrupt.
            raise PushError(
                f"registry {self.display_host} served {repository}@{reference} with "
                f"content that hashes to {computed}",
                "retry; if it persists the registry storage is damaged",
            )
        content = self._json(response, what=f"manifest {repository}:{reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip() or str(
            content.get("mediaType", "")
        )
        digest = response.headers.get("Docker-Content-Digest") or computed
        return Manifest(digest=digest, media_type=media_type, content=content, raw=response.content)

    def _json(self, response: requests.Response, *, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PushError(
                f"registry {self.display_host} returned something that is not JSON for {what}",
                "check that the host is a container registry",
            )
        return body

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else urljoin(self.base_url, path)

    def _authorization(self, url: str, scope: str) -> str | None:
        """The Authorization header to send up front, from what earlier challenges taught:
        none for a URL outside the registry's own origin (a CDN, an upload host)."""
        if not self._is_own(url):
            return None
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic_header()
        if challenge.scheme == "bearer":
            with self._lock:
                token = self._tokens.get(scope)
            if token is not None and token.fresh():
                return f"Bearer {token.value}"
        return None

    def _basic_header(self) -> str | None:
        if self.username is None or self._password is None:
            return None
        raw = f"{self.username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        absent_ok: bool = False,
        body: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> requests.Response | None:
        """Send one API request, following redirects and answering at most one auth
        challenge per host.

        Returns None for a 404 (or a registry "unknown" error code) when `absent_ok`, raises
        the matching ShipitError for anything else that is not 2xx.
        """
        url = self._url(path)
        response = self._send_authorized(method, url, scope, headers, body, timeout)
        for _ in range(_MAX_REDIRECTS):
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                break
            url = urljoin(response.url, location)
            response.close()
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                # As browsers (and requests) do: the redirected request reads, with no body.
                method = "HEAD" if method == "HEAD" else "GET"
                body = None
                headers = {
                    name: value
                    for name, value in (headers or {}).items()
                    if name.lower() not in ("content-type", "content-length")
                }
            _rewind(body)
            response = self._send_authorized(method, url, scope, headers, body, timeout)
        else:
            if response.status_code in _REDIRECT_STATUSES:
                raise PushError(
                    f"registry {self.display_host} redirected {method} {path} more than "
                    f"{_MAX_REDIRECTS} times",
                    "check the registry's address and configuration",
                )
        return self._check(response, method, path, absent_ok=absent_ok)

    def _is_own(self, url: str) -> bool:
        return same_origin(url, self.base_url)

    def _send_authorized(
        self,
        method: str,
        url: str,
        scope: str,
        headers: Mapping[str, str] | None,
        body: bytes | IO[bytes] | None,
        timeout: float | None,
    ) -> requests.Response:
        """One request to one URL, sent again once if its host answers 401 with a challenge:
        the registry's own challenge with the registry's credentials, another host's only
        when it asked, and never remembered for later requests."""
        sent_auth = self._authorization(url, scope)
        response = self._send(method, url, headers, sent_auth, body, timeout)
        if response.status_code != 401:
            return response
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if self._is_own(url):
            retry_auth = self._answer_challenge(challenge, scope, sent_auth, response)
        else:
            answer = self._answer_foreign_challenge(challenge, scope, sent_auth)
            if answer is None:
                return response  # _check reports the 401
            retry_auth = answer
        _rewind(body)
        return self._send(method, url, headers, retry_auth, body, timeout)

    def _answer_foreign_challenge(
        self, challenge: Challenge | None, scope: str, sent_auth: str | None
    ) -> str | None:
        """The answer to another host's own challenge, None when there is none to give."""
        if challenge is None or sent_auth is not None:
            return None
        if challenge.scheme == "basic":
            return self._basic_header()
        if challenge.scheme == "bearer":
            return f"Bearer {self._fetch_token(challenge, scope, remember=False)}"
        return None

    def _answer_challenge(
        self,
        challenge: Challenge | None,
        scope: str,
        sent_auth: str | None,
        response: requests.Response,
    ) -> str:
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            scheme = challenge.scheme if challenge else "none"
            raise AuthError(
                f"registry {self.display_host} answered 401 with an unsupported "
                f"authentication challenge ({scheme})",
                "use a registry that supports Basic or Bearer token authentication",
            )
        self._challenge = challenge
        if challenge.scheme == "basic":
            basic = self._basic_header()
            if basic is None or sent_auth == basic:
                raise self._auth_error(401, response=response)
            return basic
        # A cached token may have been revoked or expired early: one fresh token per
        # challenge. If that one is refused too, _check reports it.
        self._forget_token(scope)
        token = self._fetch_token(challenge, scope)
        return f"Bearer {token}"

    @staticmethod
    def _scope_detail(response: requests.Response) -> str:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is not None and challenge.error == "insufficient_scope":
            # Docker Hub answers so for a repository the user may not see or that does not
            # exist; both read the same to the user.
            return f"no access to {challenge.scope or 'the repository'}"
        return ""

    def _forget_token(self, scope: str) -> None:
        with self._lock:
            self._tokens.pop(scope, None)

    def _fetch_token(self, challenge: Challenge, scope: str, *, remember: bool = True) -> str:
        realm = challenge.realm
        if not realm.startswith(("https://", "http://")):
            raise AuthError(
                f"registry {self.display_host} sent a Bearer challenge without a usable realm",
                "check that the host is a container registry",
            )
        # The registry's own scope wins: it knows the access it is about to check.
        wanted = challenge.scope or scope
        params: dict[str, str] = {}
        if challenge.service:
            params["service"] = challenge.service
        if wanted:
            params["scope"] = wanted
        if self.username:
            params["account"] = self.username
        headers: dict[str, str] = {}
        basic = self._basic_header()
        if basic is not None:
            headers["Authorization"] = basic
        realm_host = urlsplit(realm).netloc or realm
        try:
            if self._identity_token:
                # Docker's token spec, OAuth2 flavour: POST a refresh-token grant.
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": self._identity_token,
                    "client_id": "shipit",
                    **params,
                }
                form.pop("account", None)
                response = self._session.post(
                    realm, data=form, timeout=self.timeout, auth=_no_ambient_auth
                )
            else:
                # Docker's token spec: one `scope` parameter per scope (a mount has two).
                query = {**params, "scope": wanted.split()} if wanted else params
                response = self._session.get(
                    realm,
                    params=query,
                    headers=headers,
                    timeout=self.timeout,
                    auth=_no_ambient_auth,
                )
        except requests.RequestException as exc:
            raise self._connection_error(exc, realm_host, "token service of") from exc
        log.debug("GET token %s scope=%r -> %s", realm_host, wanted, response.status_code)
        if response.status_code in (401, 403):
            raise self._auth_error(
                response.status_code, f"at token service {realm_host}", response=response
            )
        if not response.ok:
            raise self._response_error(response, f"token request to {realm_host}")
        body = self._json(response, what=f"token from {realm_host}")
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthError(
                f"token service {realm_host} of registry {self.display_host} returned no token",
                self.auth_hint,
            )
        register_secret(value)
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else _DEFAULT_TOKEN_LIFETIME
        token = _Token(value, time.monotonic() + seconds)
        if not remember:
            return value
        with self._lock:
            self._tokens[scope] = token
            if wanted != scope:
                self._tokens[wanted] = token
        return value

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        authorization: str | None,
        body: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        merged = dict(headers or {})
        if authorization is not None:
            merged["Authorization"] = authorization
        try:
            response = self._session.request(
                method,
                url,
                headers=merged,
                data=body,
                timeout=timeout or self.timeout,
                # _request follows redirects itself, deciding per hop what may be sent.
                allow_redirects=False,
                auth=_no_ambient_auth,
            )
        except requests.RequestException as exc:
            where = self.display_host
            if not self._is_own(url):
                where = f"{where} (at {urlsplit(url).netloc})"
            raise self._connection_error(exc, where, "", timeout) from exc
        log.debug("%s %s -> %s", method, urlsplit(url).path, response.status_code)
        return response

    def _check(
        self, response: requests.Response, method: str, path: str, *, absent_ok: bool
    ) -> requests.Response | None:
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status in (401, 403):
            raise self._auth_error(status, self._scope_detail(response), response=response)
        code, _ = self._error_body(response)
        if absent_ok and (status == 404 or code in NOT_FOUND_CODES):
            return None
        raise self._response_error(response, f"{method} {path}")

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


def _no_ambient_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An explicit "no auth" for requests: without one it would add ~/.netrc's credentials
    for whatever host a request goes to, a CDN or an upload host included."""
    return request


def _rewind(body: bytes | IO[bytes] | None) -> None:
    """A file body is sent again from its start (after a challenge, or a 307/308)."""
    if body is not None and not isinstance(body, bytes):
        body.seek(0)


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


__all__ = [
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "MANIFEST_ACCEPT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Challenge",
    "Manifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryConnectionError",
    "RegistryResponseError",
    "api_host",
    "describe_rate_limit",
    "is_transient",
    "is_transient_status",
    "parse_challenge",
    "parse_challenges",
    "parse_retry_after",
    "repository_scope",
    "same_origin",
]
