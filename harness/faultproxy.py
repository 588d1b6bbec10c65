"""A fault-injecting HTTP reverse proxy for tests, standard library only.

Put it in front of a loopback registry and point the Docker engine (and shipit) at the
proxy's port; it forwards every request and, depending on its mode, breaks some of them:

    proxy = FaultProxy("127.0.0.1", registry_port).start()
    proxy.set_mode("503", count=2)            # the next 2 requests get 503
    proxy.set_mode("reset-upload", count=1)   # the next blob upload is cut off mid-body
    proxy.set_mode("corrupt-upload", count=1) # the next blob upload's first byte is flipped
    proxy.set_mode("slow", delay=40, count=1) # the next request answers after 40 s
    proxy.set_mode("latency", delay=0.05)     # every request waits 50 ms first
    proxy.set_mode("429", retry_after="2", count=1)  # rate limited, as Docker Hub answers
    proxy.set_mode("403", match="PUT .*sig$")    # refused, as a registry's policy refuses
    proxy.set_mode("cdn-redirect")            # blob reads: 307 to proxy.cdn, another port
    proxy.set_mode("other-host-location")     # upload Locations point at proxy.upload_host
    proxy.set_mode("pass")                    # forward everything as it is
    ... proxy.request_count, proxy.faults_injected, proxy.log ...
    proxy.stop()

The two other hosts (`proxy.cdn`, `proxy.upload_host`, each on a loopback port of its own)
stand in for a registry's CDN and for an S3-style upload store: they serve what the proxy
hands them by a key in the URL, as a presigned URL's signature does, forwarding to the
registry with the credentials of the request the proxy redirected, never the client's own.
Each records every Authorization header a client sent it (`authorizations`).

Bounded: at most `max_connections` connections are served at once (more wait in the
listen backlog), request bodies are streamed in 64 KiB pieces, and stop() wakes every
request that is being held back, closes every client connection and joins the threads.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from harness.loopback import LOOPBACK, HttpService

MODES = (
    "pass",
    "503",
    "reset-upload",
    "corrupt-upload",
    "slow",
    "latency",
    "429",
    "cdn-redirect",
    "other-host-location",
    "403",
)
# What each mode's injected fault is logged as.
ACTIONS = {
    "503": "503",
    "reset-upload": "reset",
    "corrupt-upload": "corrupt",
    "slow": "slow",
    "latency": "latency",
    "429": "429",
    "cdn-redirect": "redirected",
    "other-host-location": "relocated",
    "403": "403",
}
# A registry's refusal by policy, in the Distribution API's error format.
DENIED = json.dumps(
    {"errors": [{"code": "DENIED", "message": "fault injected: this tag may not be written"}]}
).encode()
# Docker Hub's rate-limit headers, as an anonymous pull that reached its limit gets them.
RATE_LIMIT_HEADERS = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"}
TOO_MANY_REQUESTS = json.dumps(
    {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": "You have reached your pull rate limit. (fault injected)",
            }
        ]
    }
).encode()
# _forward's default: the request goes upstream with the client's own Authorization.
CLIENTS_OWN = "\0clients-own"
# Keys a side host remembers (the oldest are forgotten): presigned URLs expire.
MAX_GRANTS = 256
PIECE = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
UPSTREAM_TIMEOUT = 120.0


@dataclass(frozen=True)
class Seen:
    """One request the proxy parsed, what it did with it, and when (time.monotonic())."""

    method: str
    path: str
    action: str  # forwarded | 503 | reset | corrupt | slow | latency | 429 | redirected | relocated
    at: float = field(default_factory=time.monotonic)


def is_blob_upload(method: str, path: str) -> bool:
    return method in ("PATCH", "PUT") and "/blobs/uploads/" in path


def is_upload_step(method: str, path: str) -> bool:
    """A request whose answer's Location names where the upload goes on: POST and PATCH."""
    return method in ("POST", "PATCH") and "/blobs/uploads/" in path


_BLOB_READ = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")


def is_blob_read(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and bool(_BLOB_READ.match(path.split("?", 1)[0]))


# The requests each mode limits itself to; other modes apply to every request.
MODE_APPLIES: dict[str, Callable[[str, str], bool]] = {
    "reset-upload": is_blob_upload,
    "corrupt-upload": is_blob_upload,
    "cdn-redirect": is_blob_read,
    "other-host-location": is_upload_step,
}


class _BoundedServer(ThreadingHTTPServer):
    """Serves at most `max_connections` connections at once; stop() can cut them all."""

    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64
    proxy: ForwardingProxy

    def process_request(self, request: Any, client_address: Any) -> None:
        proxy = self.proxy
        # Bounded: the accept loop waits here while max_connections are being served.
        while not proxy._slots.acquire(timeout=0.1):
            if proxy._stopping.is_set():
                self.shutdown_request(request)
                return
        if proxy._stopping.is_set():
            proxy._slots.release()
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{proxy.name}-{self.server_address[1]}-conn",
            daemon=True,
        )
        with proxy._lock:
            proxy._clients.add(request)
            proxy._threads.add(thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.proxy._lock:
                self.proxy._clients.discard(request)
                self.proxy._threads.discard(threading.current_thread())
            self.proxy._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (the engine gave up, a reset we caused) is expected here.
        return


class ForwardingProxy(HttpService):
    """A bounded reverse proxy on 127.0.0.1 in front of `upstream_host:upstream_port`."""

    protocol_version = "HTTP/1.1"
    # Without this a connection thread would block forever on a client that sends nothing.
    idle_timeout = 60.0

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        port: int = 0,
        *,
        max_connections: int = 32,
        name: str = "faultproxy",
    ) -> None:
        super().__init__(port, name=name)
        self.upstream = (upstream_host, upstream_port)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self.log: list[Seen] = []

    # -- life cycle ----------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        return self.counter.total

    def make_server(self) -> ThreadingHTTPServer:
        server = _BoundedServer((LOOPBACK, self._requested_port), self.handler_class())
        server.proxy = self
        return server

    def start(self) -> Self:
        self._stopping.clear()
        return super().start()

    def stop(self, timeout: float = 10.0) -> None:
        """Wake held requests, cut every client, stop accepting, join all threads."""
        if not self.running:
            return
        self._stopping.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        super().stop(timeout)
        # The accept loop has ended, so no new connection thread can start now.
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=timeout)
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            raise RuntimeError(f"fault proxy threads still running after stop: {alive}")

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._clients)

    def seen(self, action: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if action is None or s.action == action]

    def _record(self, method: str, path: str, action: str) -> None:
        with self._lock:
            self.log.append(Seen(method, path, action))

    def _body_pieces(self, handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = handler.rfile.readline(1024)
                if not size_line:
                    raise ConnectionError("client closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    piece = handler.rfile.read(min(PIECE, left))
                    if not piece:
                        raise ConnectionError("client closed inside a chunk")
                    left -= len(piece)
                    yield piece
                handler.rfile.readline(16)
            return
        left = int(handler.headers.get("Content-Length") or 0)
        while left > 0:
            piece = handler.rfile.read(min(PIECE, left))
            if not piece:
                raise ConnectionError("client closed inside the body")
            left -= len(piece)
            yield piece

    def _drain_body(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            for _ in self._body_pieces(handler):
                pass
        except (OSError, ValueError):
            handler.close_connection = True

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        handler.wfile.flush()

    def _upstream_headers(
        self, handler: BaseHTTPRequestHandler, authorization: str | None = CLIENTS_OWN
    ) -> dict[str, str]:
        """The client's headers to send upstream, with its own Authorization (CLIENTS_OWN),
        none (None) or the one given."""
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() not in HOP_BY_HOP
            and name.lower() not in ("content-length", "host")
            and (authorization is CLIENTS_OWN or name.lower() != "authorization")
        }
        # The host the client asked for, so the registry's absolute Locations come back here.
        headers["Host"] = handler.headers.get("Host") or self.host
        if authorization is not None and authorization is not CLIENTS_OWN:
            headers["Authorization"] = authorization
        return headers

    def _upstream_status(self, handler: BaseHTTPRequestHandler, method: str) -> int:
        """The status the registry answers `method` on this request's path, without a body."""
        upstream = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.request(method, handler.path, headers=self._upstream_headers(handler))
            response = upstream.getresponse()
            response.read()
            return response.status
        finally:
            upstream.close()

    def _forward(
        self,
        handler: BaseHTTPRequestHandler,
        *,
        path: str | None = None,
        authorization: str | None = CLIENTS_OWN,
        location: Callable[[str], str] | None = None,
        keep: Callable[[str], bool] = lambda name: True,
        corrupt: bool = False,
    ) -> None:
        """The request upstream (to `path`, with the client's Authorization unless told
        otherwise), and the answer back: its Location rewritten by `location` (which gets
        the Location's path and query), its headers those `keep` keeps. `corrupt` flips the
        body's first byte, as a broken middlebox would: the registry itself then finds that
        the bytes do not hash to their digest."""
        headers = self._upstream_headers(handler, authorization)
        has_body = (
            "Content-Length" in handler.headers
            or "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        )
        upstream = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.putrequest(handler.command, path or handler.path, skip_host=True)
            for name, value in headers.items():
                upstream.putheader(name, value)
            length = handler.headers.get("Content-Length")
            chunked = has_body and length is None
            if length is not None:
                upstream.putheader("Content-Length", length)
            elif chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            if has_body:
                for received in self._body_pieces(handler):
                    piece = received
                    if corrupt and piece:
                        piece, corrupt = bytes([piece[0] ^ 0xFF]) + piece[1:], False
                    upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
            response = upstream.getresponse()
            self._relay(handler, response, location, keep)
        finally:
            upstream.close()

    def _relay(
        self,
        handler: BaseHTTPRequestHandler,
        response: http.client.HTTPResponse,
        location: Callable[[str], str] | None = None,
        keep: Callable[[str], bool] = lambda name: True,
    ) -> None:
        handler.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        bodyless = handler.command == "HEAD" or response.status in (204, 304)
        chunked = not bodyless and length is None
        for name, value in response.getheaders():
            if name.lower() in HOP_BY_HOP or not keep(name):
                continue
            if location is not None and name.lower() == "location":
                parts = urlsplit(value)
                handler.send_header(
                    name, location(parts.path + (f"?{parts.query}" * bool(parts.query)))
                )
            else:
                handler.send_header(name, value)
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if not bodyless:
            while True:
                piece = response.read(PIECE)
                if not piece:
                    break
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()


class FaultProxy(ForwardingProxy):
    """A reverse proxy on 127.0.0.1 in front of `upstream_host:upstream_port` that breaks
    some requests, as set_mode says; with its CDN and upload host on ports of their own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """ForwardingProxy's arguments."""
        super().__init__(*args, **kwargs)
        upstream_host, upstream_port = self.upstream
        self._mode = "pass"
        self._remaining: int | None = None
        self._delay = 0.0
        self._match: re.Pattern[str] | None = None
        self._retry_after: str | None = None
        self.faults_injected = 0
        self.cdn = SideHost(upstream_host, upstream_port, name="cdn", registry_headers=False)
        self.upload_host = SideHost(
            upstream_host, upstream_port, name="uploadhost", registry_headers=True
        )

    def start(self) -> Self:
        self.cdn.start()
        self.upload_host.start()
        return super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.cdn.stop(timeout)
        self.upload_host.stop(timeout)

    def __repr__(self) -> str:
        where = self.host if self._server else "stopped"
        return f"FaultProxy({where} -> {self.upstream[0]}:{self.upstream[1]}, mode={self._mode})"

    # -- faults --------------------------------------------------------------------------

    def set_mode(
        self,
        mode: str,
        *,
        count: int | None = None,
        delay: float = 0.0,
        match: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Switch the fault. `count` limits how many requests get it (None: all of them);
        `delay` is seconds for slow/latency; `retry_after` the Retry-After value of a 429
        (None: no such header); `match`, a regular expression searched in "METHOD path",
        limits the fault to the requests it finds. Some modes always limit themselves:
        reset-upload and corrupt-upload to blob uploads (PATCH/PUT to /blobs/uploads/),
        cdn-redirect to blob
        reads (GET/HEAD of /blobs/DIGEST), other-host-location to upload steps whose answer
        names the next one (POST/PATCH to /blobs/uploads/)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        with self._lock:
            self._mode = mode
            self._remaining = count
            self._delay = delay
            self._match = re.compile(match) if match else None
            self._retry_after = retry_after

    @property
    def mode(self) -> str:
        return self._mode

    def _decide(self, method: str, path: str) -> tuple[str, float]:
        """The action for this request, counted under the lock. A redirect is logged once
        it is made (handle): the registry may answer that blob read with no blob at all."""
        with self._lock:
            mode, delay = self._mode, self._delay
            applies = mode != "pass" and MODE_APPLIES.get(mode, lambda m, p: True)(method, path)
            if applies and self._match is not None:
                applies = bool(self._match.search(f"{method} {path}"))
            if applies and self._remaining is not None:
                if self._remaining <= 0:
                    applies = False
                else:
                    self._remaining -= 1
            action = ACTIONS[mode] if applies else "forwarded"
            if applies and mode not in ("latency", "cdn-redirect"):
                self.faults_injected += 1
            if action != "redirected":
                self.log.append(Seen(method, path, action))
            return action, delay

    # -- one request ---------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        action, delay = self._decide(handler.command, handler.path)
        if action == "503":
            self._drain_body(handler)
            self._reply(handler, 503, b"fault injected: service unavailable\n")
            return
        if action == "403":
            self._drain_body(handler)
            self._reply(handler, 403, DENIED, "application/json")
            return
        if action == "429":
            self._drain_body(handler)
            headers = dict(RATE_LIMIT_HEADERS)
            if self._retry_after is not None:
                headers["Retry-After"] = self._retry_after
            self._reply(handler, 429, TOO_MANY_REQUESTS, "application/json", headers)
            return
        if action == "reset":
            self._reset_mid_body(handler)
            return
        if action in ("slow", "latency") and self._stopping.wait(delay):
            handler.close_connection = True
            return
        try:
            if action == "redirected":
                self._redirect_to_cdn(handler)
            elif action == "relocated":
                grant = self.upload_host.grant(handler.headers.get("Authorization"))
                self._forward(handler, location=lambda path: self.upload_host.url_for(grant, path))
            else:
                self._forward(handler, corrupt=action == "corrupt")
        except OSError:
            # Either side went away mid-transfer: the client sees a cut connection.
            handler.close_connection = True

    def _redirect_to_cdn(self, handler: BaseHTTPRequestHandler) -> None:
        """307 to the CDN when the registry holds the blob and lets this client read it (as
        Docker Hub checks before it redirects); the registry's own answer otherwise."""
        if self._upstream_status(handler, "HEAD") != 200:
            self._record(handler.command, handler.path, "forwarded")
            self._forward(handler)
            return
        grant = self.cdn.grant(handler.headers.get("Authorization"))
        with self._lock:
            self.faults_injected += 1
            self.log.append(Seen(handler.command, handler.path, "redirected"))
        self._reply(handler, 307, b"", headers={"Location": self.cdn.url_for(grant, handler.path)})

    def _reset_mid_body(self, handler: BaseHTTPRequestHandler) -> None:
        """Read some of the upload, then abort the TCP connection (RST, no response)."""
        length = int(handler.headers.get("Content-Length") or 0)
        want = min(PIECE, max(1, length // 2)) if length else PIECE
        try:
            handler.connection.settimeout(2)
            handler.rfile.read1(want)
        except OSError:
            pass
        linger = struct.pack("ii", 1, 0)
        with contextlib.suppress(OSError):
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.close()


class SideHost(ForwardingProxy):
    """Another host on a loopback port of its own, as a registry's CDN (Docker Hub, GHCR) or
    S3-style upload store (ECR) is. A URL from url_for() carries a key, as a presigned URL
    carries its signature; requests with a known key go to the registry with the
    Authorization of the request the key was granted for, never the one the client sent.
    Every Authorization header a client sent is recorded in `authorizations`.

    `registry_headers` False (a CDN) drops the registry's Docker-* headers from answers, so a
    client must make do with what a CDN sends; True (an upload host) keeps them and points
    the Locations of answers back at this host. `challenge`, when set, is a WWW-Authenticate
    value answered (401) to requests that bring no Authorization of their own.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, name: str, registry_headers: bool
    ) -> None:
        super().__init__(upstream_host, upstream_port, name=name)
        self.registry_headers = registry_headers
        self.challenge: str | None = None
        self.authorizations: list[str] = []
        self._grants: collections.OrderedDict[str, str | None] = collections.OrderedDict()

    def grant(self, authorization: str | None) -> str:
        """A new key for requests made on behalf of the one that brought `authorization`."""
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._grants[key] = authorization
            while len(self._grants) > MAX_GRANTS:
                self._grants.popitem(last=False)
        return key

    def url_for(self, key: str, path: str) -> str:
        """The absolute URL, on this host, of registry path `path` (with its query)."""
        return f"{self.url}/k/{key}{path}"

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        sent = handler.headers.get("Authorization")
        key, _, rest = handler.path.removeprefix("/k/").partition("/")
        with self._lock:
            if sent is not None:
                self.authorizations.append(sent)
            known = handler.path.startswith("/k/") and key in self._grants
            granted = self._grants.get(key)
        self._record(handler.command, handler.path, "forwarded" if known else "refused")
        if not known:
            self._drain_body(handler)
            self._reply(handler, 403, b"unknown or expired key\n")
            return
        if self.challenge is not None and sent is None:
            self._drain_body(handler)
            headers = {"WWW-Authenticate": self.challenge}
            self._reply(handler, 401, b"authentication required\n", headers=headers)
            return
        try:
            self._forward(
                handler,
                path="/" + rest,
                authorization=granted,
                location=(lambda path: self.url_for(key, path)) if self.registry_headers else None,
                keep=lambda name: self.registry_headers or not name.lower().startswith("docker-"),
            )
        except OSError:
            handler.close_connection = True
