"""Load: the served site holds 200 concurrent connections for 10 s without one error.

A bounded asyncio load loop on loopback (standard library only): 200 keep-alive
connections are opened first, then every one of them sends GET / back to back until the
10 s are up. Every answer must be a 200 with this build's id. The loop is bounded in time
(10 s of load, then a short grace for requests in flight) and in connections (exactly 200,
re-opened only when nginx closes one after its keepalive_requests).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import pytest

from harness.services import free_port
from shipit.engine import Engine
from tests.conftest import Project
from tests.reliability import Recorder

pytestmark = pytest.mark.engine

CONNECTIONS = 200
SECONDS = 10.0
GRACE = 10.0
READ_TIMEOUT = 5.0


@dataclass
class LoadResult:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    open_now: int = 0
    open_max: int = 0
    open_min_during_load: int = CONNECTIONS
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    per_connection: list[int] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def p99_ms(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""
    return status, headers, body


async def _load(port: int, marker: bytes) -> LoadResult:
    result = LoadResult()
    all_open = asyncio.Event()
    go = asyncio.Event()  # set once the 10 s window is fixed
    stop_at = 0.0
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: shipit-load\r\n\r\n"

    def opened() -> None:
        result.open_now += 1
        result.open_max = max(result.open_max, result.open_now)
        if result.open_now == CONNECTIONS:
            all_open.set()

    def closed() -> None:
        result.open_now -= 1
        if go.is_set() and time.monotonic() < stop_at:
            result.open_min_during_load = min(result.open_min_during_load, result.open_now)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened()
        served = 0
        try:
            await go.wait()
            while time.monotonic() < stop_at:
                sent = time.monotonic()
                writer.write(request.encode())
                await writer.drain()
                try:
                    status, headers, body = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    return
                result.latencies.append(time.monotonic() - sent)
                if status != 200 or marker not in body:
                    result.errors.append(f"HTTP {status}, build id present: {marker in body}")
                    return
                result.requests += 1
                served += 1
                if headers.get("connection", "").lower() == "close":
                    # nginx ends a connection after keepalive_requests: open the next one.
                    writer.close()
                    closed()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    opened()
                    result.reconnects += 1
        finally:
            writer.close()
            closed()
            result.per_connection.append(served)

    tasks = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    try:
        await asyncio.wait_for(all_open.wait(), 30)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result.errors.append(f"only {result.open_max} of {CONNECTIONS} connections opened")
        return result
    started = time.monotonic()
    stop_at = started + SECONDS
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=SECONDS + GRACE)
    result.seconds = time.monotonic() - started
    for task in pending:
        task.cancel()
        result.errors.append("a connection was still busy after the grace period")
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            result.errors.append(f"{type(task.exception()).__name__}: {task.exception()}")
    result.seconds = min(result.seconds, SECONDS + GRACE)
    return result


@pytest.mark.reliability(
    f"{CONNECTIONS} concurrent keep-alive connections for {SECONDS:g} s against the container",
    "zero errors, every answer a 200 carrying this build's id; requests per second reported",
)
def test_site_holds_200_concurrent_connections(
    engine: Engine, project: Project, reliability: Recorder
) -> None:
    port = free_port()
    started = project.shipit("run", "--port", str(port), "--json")
    assert started.code == 0, started.output
    build_id = json.loads(started.stdout)["build_id"]
    marker = f'<meta name="shipit-build" content="{build_id}">'.encode()
    try:
        result = asyncio.run(_load(port, marker))
    finally:
        stopped = project.shipit("stop")
    summary = (
        f"{result.requests} requests in {result.seconds:.1f} s = {result.rps:.0f} requests/s; "
        f"{len(result.errors)} errors; connections open: max {result.open_max}, "
        f"min during load {result.open_min_during_load}; {result.reconnects} reconnects "
        f"after keepalive_requests; requests per connection "
        f"{min(result.per_connection, default=0)}-{max(result.per_connection, default=0)}; "
        f"p99 {result.p99_ms():.0f} ms"
    )
    print(summary)
    reliability.observe(summary)
    if result.errors:
        reliability.observe(f"first error: {result.errors[0]}")
    assert stopped.code == 0, stopped.output
    assert result.errors == []
    assert result.open_max == CONNECTIONS
    # Every one of the 200 was served all along, not only a lucky few.
    assert len(result.per_connection) == CONNECTIONS
    assert min(result.per_connection) >= 2
    assert SECONDS <= result.seconds <= SECONDS + GRACE
