"""Servers on 127.0.0.1 for tests and the benchmark: a free port, a server thread, counts.

`Background` gives anything with start() and stop() the `with` protocol. `HttpService` is an
HTTP server on a loopback port, served from daemon threads, that hands every request to its
handle() method and counts requests by method; stop() ends the server and joins its thread.
tests/services.py (the token service), tests/faultproxy.py and small servers inside tests
build on it; bench/latency_proxy.py (asyncio, raw TCP) uses the port, counter and life cycle.
"""

from __future__ import annotations

import collections
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import ClassVar, Self

LOOPBACK = "127.0.0.1"
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it; there is a small race until the service binds it, which the
    services detect (the process exits, the bind fails) rather than hang on.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Background:
    """Something started and stopped around a `with` block.

    close() is what the block ends with: stop() unless a service also has storage or logs
    of its own to remove.
    """

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RequestCounter:
    """Requests counted by kind (an HTTP method, say); safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        """Counts by kind, and `total`."""
        with self._lock:
            return {**self._counts, "total": sum(self._counts.values())}


class HttpService(Background):
    """An HTTP server on 127.0.0.1 that passes every request to handle().

    Port 0 lets the kernel choose when the server binds (no race); pass a port chosen
    beforehand when something must know the address before start().
    """

    protocol_version: ClassVar[str] = "HTTP/1.0"
    # Seconds a connection may say nothing before its thread gives up on it; None: forever.
    idle_timeout: ClassVar[float | None] = None
    methods: ClassVar[tuple[str, ...]] = ALL_METHODS

    def __init__(self, port: int = 0, *, name: str = "http") -> None:
        self._requested_port = port
        self._port = port
        self.name = name
        self.counter = RequestCounter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The port it listens on; after stop(), the one it listened on."""
        return self._port

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = service.protocol_version
            timeout = service.idle_timeout

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per request floods the test output

            def parse_request(self) -> bool:
                # A TLS handshake on this plain-HTTP port: answer as Go's servers do, so an
                # engine that tries HTTPS first (the containerd image store does) sees "HTTP
                # response to HTTPS client" and falls back to plain HTTP, as it would with
                # the registry itself. http.server would answer without a status line.
                if self.raw_requestline.startswith(b"\x16\x03"):
                    self.wfile.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                    self.close_connection = True
                    return False
                return super().parse_request()

            def handle_any(self) -> None:
                service.counter.add(self.command)
                service.handle(self)

        for method in self.methods:
            setattr(Handler, f"do_{method}", Handler.handle_any)
        return Handler

    def make_server(self) -> ThreadingHTTPServer:
        """The server to run; a subclass may return its own ThreadingHTTPServer kind."""
        return ThreadingHTTPServer((LOOPBACK, self._requested_port), self.handler_class())

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = self.make_server()
        server.daemon_threads = True
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
