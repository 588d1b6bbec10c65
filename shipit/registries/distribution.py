"""A small client for the OCI Distribution (Docker Registry v2) HTTP API.

The Docker engine pushes images; this module asks a registry what it holds: the digest a tag
points at, an image's config digest (equal to the local image ID), whether a blob exists,
the tags of a repository, a base image's index and blobs. That is what lets shipit verify a
push (the pushed digest is the one the registry serves) and skip work that is already done, for
ECR, Docker Hub and any Distribution-compatible registry alike. Its writes are a manifest PUT,
which points another tag at a manifest the registry already serves, without the engine's second
push, and the blob uploads of a push that shipit makes itself (shipit/push/blobs.py).

Authentication follows the registry's `WWW-Authenticate` challenge, as the engine does:
`Basic` (ECR, htpasswd registries) sends the credentials on every request; `Bearer` (Docker
Hub, token-auth registries) trades them at the challenge's realm for a short-lived token per
scope. Neither the password nor a token ever appears in an exception, a log line or a repr.

Credentials go to the registry's own origin only (the scheme, host and port the client was
made for). A redirect to a CDN (Docker Hub, GHCR) and an upload `Location` on another host
(ECR, S3-backed registries, presigned URLs) are sent no Authorization at all; such a host gets
credentials only when it asks with a challenge of its own. Redirects are followed here, not by
requests, so that this rule is in one place; ~/.netrc is never consulted.

Beside it in registries/: its errors (errors.py), the API host and origins (hosts.py), the
challenge parser and scopes (challenge.py), `Manifest` (manifest.py), the blob reads
(blob_reads.py) and uploads (blob_uploads.py) and the one-line diagnosis of a failed request
(diagnosis.py). Copying a blob from one registry to another is blob_copy.py's.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from shipit import __version__
from shipit.closing import Closing
from shipit.digests import sha256_digest
from shipit.errors import AuthError, PushError
from shipit.redact import register_secret
from shipit.registries.blob_reads import BlobReads
from shipit.registries.blob_uploads import BlobUploads, Body
from shipit.registries.challenge import BearerToken, Challenge, parse_challenge, repository_scope
from shipit.registries.credentials import Credentials
from shipit.registries.diagnosis import FailureDiagnosis
from shipit.registries.errors import NOT_FOUND_CODES, RegistryResponseError
from shipit.registries.hosts import api_host, repository_path, same_origin
from shipit.registries.manifest import MANIFEST_ACCEPT, Manifest
from shipit.registries.transport import RegistryRules, RegistryTransport, transport_for

log = logging.getLogger(__name__)

DEFAULT_AUTH_HINT = (
    "check the user name and password for this registry "
    "(DOCKERHUB_TOKEN for Docker Hub; for ECR a fresh token from ecr get-authorization-token)"
)

# Docker's token spec: a token without expires_in is valid for 60 seconds.
_DEFAULT_TOKEN_LIFETIME = 60.0
# Redirects followed for one request; Docker Hub's blob reads need one.
_MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class RegistryClient(BlobReads, BlobUploads, FailureDiagnosis, Closing):
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
        self._tokens: dict[str, BearerToken] = {}
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
        """The manifest a tag or a digest names: an image manifest or an index (Accept names
        both), its bytes checked against a digest; RegistryResponseError (404) when absent."""
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

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest a tag or a digest names, as get_manifest reads it; None when absent."""
        return self._fetch_manifest(self._repository(repository), reference)

    def image_config(self, repository: str, manifest: Manifest) -> dict[str, Any]:
        """The image config that `manifest` names (labels, created time, diff ids), checked
        against its digest; {} for a manifest that names no config (an index)."""
        digest = manifest.config_digest
        if digest is None:
            return {}
        size = manifest.content["config"].get("size")
        content = self.read_blob(repository, digest, size=size if isinstance(size, int) else None)
        return self._json_of(content, what=f"image config {self._repository(repository)}@{digest}")

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

    def _repository(self, repository: str) -> str:
        return repository_path(self.host, repository)

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
        computed = sha256_digest(response.content)
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
        return self._json_of(response.content, what=what)

    def _json_of(self, content: bytes, *, what: str) -> dict[str, Any]:
        try:
            body = json.loads(content)
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
        body: bytes | Body | None = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> requests.Response | None:
        """Send one API request, following redirects and answering at most one auth
        challenge per host; with `stream`, the answer's body is left to the caller to read.

        Returns None for a 404 (or a registry "unknown" error code) when `absent_ok`, raises
        the matching ShipitError for anything else that is not 2xx.
        """
        url = self._url(path)
        response = self._send_authorized(method, url, scope, headers, body, timeout, stream)
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
            response = self._send_authorized(method, url, scope, headers, body, timeout, stream)
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
        body: bytes | Body | None,
        timeout: float | None,
        stream: bool = False,
    ) -> requests.Response:
        """One request to one URL, sent again once if its host answers 401 with a challenge:
        the registry's own challenge with the registry's credentials, another host's only
        when it asked, and never remembered for later requests."""
        sent_auth = self._authorization(url, scope)
        response = self._send(method, url, headers, sent_auth, body, timeout, stream)
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
        return self._send(method, url, headers, retry_auth, body, timeout, stream)

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
        if service := challenge.param("service"):
            params["service"] = service
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
        token = BearerToken(value, time.monotonic() + seconds)
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
        body: bytes | Body | None = None,
        timeout: float | None = None,
        stream: bool = False,
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
                stream=stream,
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


def _no_ambient_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An explicit "no auth" for requests: without one it would add ~/.netrc's credentials
    for whatever host a request goes to, a CDN or an upload host included."""
    return request


def _rewind(body: bytes | Body | None) -> None:
    """A file body is sent again from its start (after a challenge, or a 307/308)."""
    if body is not None and not isinstance(body, bytes):
        body.seek(0)
