"""The smoke test against real HTTP servers that get things right and wrong."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from shipit.smoke import SECURITY_HEADERS, run_smoke, wait_until_ready

GOOD_PAGE = b'<html><head><meta name="shipit-build" content="abc123"></head><body></body></html>'
NOT_FOUND = b'<html><body data-shipit-page="404">gone</body></html>'


class SiteHandler(http.server.BaseHTTPRequestHandler):
    headers_to_send: ClassVar[dict[str, str]] = {}
    home: ClassVar[bytes] = GOOD_PAGE
    missing_status: ClassVar[int] = 404

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(200, "text/html", self.home)
        elif self.path == "/healthz":
            self._send(200, "text/plain", b"ok")
        else:
            self._send(self.missing_status, "text/html", NOT_FOUND)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in self.headers_to_send.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def serve(handler: type[SiteHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


ALL_HEADERS = {name: "set" for name in SECURITY_HEADERS}


@pytest.fixture
def good_site() -> Iterator[str]:
    handler = type("Good", (SiteHandler,), {"headers_to_send": ALL_HEADERS})
    yield from serve(handler)


def test_a_correct_site_passes(good_site: str) -> None:
    report = run_smoke(good_site, "abc123")
    assert report.ok, report.failed
    assert report.served_build_id == "abc123"


def test_a_stale_build_fails(good_site: str) -> None:
    report = run_smoke(good_site, "newer-build")
    assert not report.ok
    assert [check.name for check in report.failed] == ["build id"]


def test_missing_security_header_fails_by_name() -> None:
    headers = {k: v for k, v in ALL_HEADERS.items() if k != "Content-Security-Policy"}
    for url in serve(type("NoCsp", (SiteHandler,), {"headers_to_send": headers})):
        report = run_smoke(url, "abc123")
    assert [check.name for check in report.failed] == ["header Content-Security-Policy"]


def test_soft_404_fails() -> None:
    for url in serve(
        type("Soft404", (SiteHandler,), {"headers_to_send": ALL_HEADERS, "missing_status": 200})
    ):
        report = run_smoke(url, "abc123")
    assert [check.name for check in report.failed] == ["404 page"]


def test_nothing_listening_fails_every_request() -> None:
    for url in serve(type("Gone", (SiteHandler,), {})):
        closed = url
    report = run_smoke(closed, "abc123")
    assert not report.ok
    assert {check.name for check in report.failed} >= {"home page", "healthz", "404 page"}


def test_wait_until_ready_stops_when_the_server_died() -> None:
    assert wait_until_ready("http://127.0.0.1:9", 30, still_running=lambda: False) is False


def test_wait_until_ready_sees_a_live_server(good_site: str) -> None:
    assert wait_until_ready(good_site, 5, still_running=lambda: True) is True
