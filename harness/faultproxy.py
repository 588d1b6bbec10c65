"""A fault-injecting HTTP reverse proxy for tests, standard library only.

Put it in front of a loopback registry and point the Docker engine (and shipit) at the
proxy's port; it forwards every request and, depending on its mode, breaks some of them:

    proxy = FaultProxy("127.0.0.1", registry_port).start()
    proxy.set_mode("503", count=2)            # the next 2 requests get 503
    proxy.set_mode("reset-upload", count=1)   # the next blob upload is cut off mid-body
    proxy.set_mode("slow", delay=40, count=1) # the next request answers after 40 s
    proxy.set_mode("latency", delay=0.05)     # every request waits 50 ms first
    proxy.set_mode("pass")                    # forward everything as it is
    ... proxy.request_count, proxy.faults_injected, proxy.log ...
    proxy.stop()

Bounded: at most `max_connections` connections are served at once (more wait in the
listen backlog), request bodies are streamed in 64 KiB pieces, and stop() wakes every
request that is being held back, closes every client connection and joins the threads.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.loopback import LOOPBACK, HttpService

MODES = ("pass", "503", "reset-upload", "slow", "latency")
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
    """One request the proxy parsed, and what it did with it."""

    method: str
    path: str
    action: str  # forwarded | 503 | reset | slow | latency | dropped


def is_blob_upload(method: str, path: str) -> bool:
    return method in ("PATCH", "PUT") and "/blobs/uploads/" in path


class _BoundedServer(ThreadingHTTPServer):
    """Serves at most `max_connections` connections at once; stop() can cut them all."""

    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64
    proxy: FaultProxy

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


class FaultProxy(HttpService):
    """A reverse proxy on 127.0.0.1 in front of `upstream_host:upstream_port`."""

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
    ) -> None:
        super().__init__(port, name="faultproxy")
        self.upstream = (upstream_host, upstream_port)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._mode = "pass"
        self._remaining: int | None = None
        self._delay = 0.0
        self._match: re.Pattern[str] | None = None
        self.faults_injected = 0
        self.log: list[Seen] = []

    # -- life cycle ----------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        return self.counter.total

    def make_server(self) -> ThreadingHTTPServer:
        server = _BoundedServer((LOOPBACK, self._requested_port), self.handler_class())
        server.proxy = self
        return server

    def start(self) -> FaultProxy:
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
    ) -> None:
        """Switch the fault. `count` limits how many requests get it (None: all of them);
        `delay` is seconds for slow/latency; `match`, a regular expression searched in
        "METHOD path", limits the fault to the requests it finds (reset-upload always
        limits itself to blob uploads: PATCH/PUT to /blobs/uploads/)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        with self._lock:
            self._mode = mode
            self._remaining = count
            self._delay = delay
            self._match = re.compile(match) if match else None

    @property
    def mode(self) -> str:
        return self._mode

    def seen(self, action: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if action is None or s.action == action]

    def _decide(self, method: str, path: str) -> tuple[str, float]:
        """The action for this request, counted under the lock."""
        with self._lock:
            mode, delay = self._mode, self._delay
            applies = mode != "pass" and (mode != "reset-upload" or is_blob_upload(method, path))
            if applies and self._match is not None:
                applies = bool(self._match.search(f"{method} {path}"))
            if applies and self._remaining is not None:
                if self._remaining <= 0:
                    applies = False
                else:
                    self._remaining -= 1
            action = {"503": "503", "reset-upload": "reset", "slow": "slow"}.get(mode, mode)
            if not applies:
                action = "forwarded"
            elif mode != "latency":
                self.faults_injected += 1
            self.log.append(Seen(method, path, action))
            return action, delay

    # -- one request ---------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        action, delay = self._decide(handler.command, handler.path)
        if action == "503":
            self._drain_body(handler)
            self._reply(handler, 503, b"fault injected: service unavailable\n")
            return
        if action == "reset":
            self._reset_mid_body(handler)
            return
        if action in ("slow", "latency") and self._stopping.wait(delay):
            handler.close_connection = True
            return
        try:
            self._forward(handler)
        except OSError:
            # Either side went away mid-transfer: the client sees a cut connection.
            handler.close_connection = True

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        handler.wfile.flush()

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

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
        }
        has_body = (
            "Content-Length" in handler.headers
            or "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        )
        upstream = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.putrequest(handler.command, handler.path, skip_host=True)
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
                for piece in self._body_pieces(handler):
                    upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
            response = upstream.getresponse()
            self._relay(handler, response)
        finally:
            upstream.close()

    def _relay(self, handler: BaseHTTPRequestHandler, response: http.client.HTTPResponse) -> None:
        handler.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        bodyless = handler.command == "HEAD" or response.status in (204, 304)
        chunked = not bodyless and length is None
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
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
