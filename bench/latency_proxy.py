"""A small HTTP/1.1-aware TCP proxy that delays every request and counts them.

It stands in front of a loopback registry so that a benchmark can show how many round
trips a tool makes: each request waits `delay` seconds before it is forwarded upstream,
so a tool that makes N sequential requests pays about N * delay.

Only the client-to-server direction is parsed (request line, headers, then a
Content-Length or chunked body, so keep-alive connections with several requests are
counted right); responses are relayed byte for byte. A connection that does not start
with an HTTP request (the engine probes loopback registries with a TLS handshake first)
is relayed as it is and counted as a `tls-probe`, delayed once like a request.

Runs an asyncio loop in a daemon thread; no third-party dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from harness.loopback import ALL_METHODS, LOOPBACK, Background, RequestCounter, free_port

_METHODS = tuple(method.encode() for method in ALL_METHODS)
_CHUNK = 64 * 1024


class LatencyProxy(Background):
    """127.0.0.1:<port> -> upstream host:port, adding `delay` seconds to every request."""

    def __init__(self, upstream: str, delay: float = 0.05, port: int | None = None) -> None:
        host, _, upstream_port = upstream.rpartition(":")
        self.upstream_host = host or "127.0.0.1"
        self.upstream_port = int(upstream_port)
        self.delay = delay
        self.port = port or free_port()
        self._requests = RequestCounter()
        self._connections = RequestCounter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    # Counters

    def reset(self) -> None:
        self._requests.reset()
        self._connections.reset()

    def snapshot(self) -> dict[str, int]:
        """Requests by method (plus `tls-probe`), `total` and `connections` since reset()."""
        return {**self._requests.snapshot(), "connections": self._connections.total}

    # Relaying

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    async def _relay_exact(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int
    ) -> None:
        while size > 0:
            data = await reader.read(min(size, _CHUNK))
            if not data:
                raise ConnectionError("client closed inside a request body")
            writer.write(data)
            size -= len(data)
            await writer.drain()

    async def _relay_chunked(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers, then the blank line that ends the body.
                while True:
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        await writer.drain()
                        return
            await self._relay_exact(reader, writer, size + 2)  # the data and its CRLF

    async def _relay_requests(
        self, first: bytes, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        """Forwards request after request of one keep-alive connection, each after the delay."""
        pending = first
        while True:
            head = pending + await reader.readuntil(b"\r\n\r\n")
            method = head.split(b" ", 1)[0]
            self._requests.add(method.decode("latin-1") if method in _METHODS else "other")
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            await asyncio.sleep(self.delay)
            upstream.write(head)
            await upstream.drain()
            if chunked:
                await self._relay_chunked(reader, upstream)
            elif length:
                await self._relay_exact(reader, upstream, length)
            # The next request head, or EOF when the client is done with the connection.
            pending = await reader.read(1)
            if not pending:
                return

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._connections.add("connection")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            client_writer.close()
            return
        responses = asyncio.create_task(self._pump(upstream_reader, client_writer))
        try:
            first = await client_reader.read(1)
            if not first:
                return
            if first == b"\x16":  # a TLS handshake record: relay it untouched
                self._requests.add("tls-probe")
                await asyncio.sleep(self.delay)
                upstream_writer.write(first)
                await self._pump(client_reader, upstream_writer)
                return
            await self._relay_requests(first, client_reader, upstream_writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        except ValueError:  # an unparsable size: not HTTP we understand; give up on it
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                upstream_writer.write_eof()
            try:
                await asyncio.wait_for(responses, timeout=30)
            except (TimeoutError, asyncio.CancelledError):
                responses.cancel()
            for writer in (upstream_writer, client_writer):
                with contextlib.suppress(ConnectionError, OSError):
                    writer.close()

    # Lifecycle

    def start(self) -> LatencyProxy:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, LOOPBACK, self.port)
                )
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(
            target=serve, name=f"latency-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise RuntimeError(f"latency proxy could not listen on {self.host}") from failure[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if server is not None:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None
        self._server = None
