"""The crawl against a real HTTP server (keep-alive, HTTP/1.1) that serves a site as a dict."""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from shipit.crawl import MAX_PARSED_BYTES, crawl, expected_type, media_type

HOME = b"""<!doctype html><html><head><link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/logo.svg"></head><body>
<a href="/about.html">about</a> <a href="/docs">docs</a> <a href="https://example.com/x">x</a>
<img src="/static/logo.svg" srcset="/static/logo.svg 1x, /static/logo-2x.png 2x"></body></html>"""
SITE: dict[str, tuple[int, str, bytes]] = {
    "/": (200, "text/html", HOME),
    "/about.html": (200, "text/html", b'<a href="/">home</a><img src="static/logo.svg">'),
    "/docs/": (200, "text/html", b'<a href="../about.html#team">team</a>'),
    "/static/style.css": (200, "text/css", b"body{background:url(bg.png)}"),
    "/static/bg.png": (200, "image/png", b"\x89PNG"),
    "/static/logo.svg": (200, "image/svg+xml; charset=utf-8", b"<svg/>"),
    "/static/logo-2x.png": (200, "image/png", b"\x89PNG"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    site: ClassVar[dict[str, tuple[int, str, bytes]]] = SITE
    requests: ClassVar[Counter[str]]
    connections: ClassVar[set[int]]
    delay: ClassVar[float] = 0.0

    def do_GET(self) -> None:
        self.requests[self.path] += 1
        self.connections.add(id(self.connection))
        if self.path == "/docs":
            # nginx names its own listen port in a redirect, not the published one.
            self.send_response(301)
            self.send_header("Location", "http://127.0.0.1:1/docs/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        time.sleep(self.delay)
        status, content_type, body = self.site.get(self.path, (404, "text/html", b"gone"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def serve(**attributes: object) -> Iterator[tuple[str, type[Handler]]]:
    return serve_handler(Handler, **attributes)


def serve_handler(base: type[Handler], **attributes: object) -> Iterator[tuple[str, type[Handler]]]:
    handler = type("Site", (base,), {"requests": Counter(), "connections": set(), **attributes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site() -> Iterator[tuple[str, type[Handler]]]:
    yield from serve()


def test_a_whole_site_passes_each_url_fetched_once(site: tuple[str, type[Handler]]) -> None:
    url, handler = site
    report = crawl(url, ["/", "/about.html"], time_bound=10)
    assert report.ok, [problem.line() for problem in report.problems]
    assert (report.pages, report.assets, report.redirects) == (3, 4, 1)
    assert report.external_origins == ["https://example.com"]
    assert set(handler.requests.values()) == {1}
    assert set(handler.requests) == {*SITE, "/docs"}
    # A few keep-alive connections, not one per request.
    assert len(handler.connections) <= 8 < len(handler.requests) + 1


def test_each_broken_reference_is_one_line_naming_page_and_reference() -> None:
    broken = {
        **SITE,
        "/about.html": (
            200,
            "text/html",
            b'<a href="contact.html">c</a><img src="static/logo.svg">',
        ),
        "/static/style.css": (200, "text/css", b"body{background:url(missing.png)}"),
        "/static/logo.svg": (200, "text/plain", b"<svg/>"),
    }
    for url, _ in serve(site=broken):
        report = crawl(url, ["/", "/about.html", "/gone.html"], time_bound=10)
    assert [problem.line() for problem in report.problems] == [
        "(a page of the render): /gone.html -> 404 Not Found",
        "/: /static/logo.svg -> 200 text/plain, expected image/svg+xml (and 1 more reference)",
        "/about.html: contact.html (/contact.html) -> 404 Not Found",
        "/static/style.css: missing.png (/static/missing.png) -> 404 Not Found",
    ]
    assert not report.ok


def test_a_crawl_longer_than_its_bound_names_what_was_left() -> None:
    for url, _ in serve(delay=5.0):
        started = time.monotonic()
        report = crawl(url, ["/"], time_bound=0.2)
        took = time.monotonic() - started
    assert took < 2.0  # the bound, not the server's 5 s (with room for a busy machine)
    assert [problem.line() for problem in report.problems] == [
        "(a page of the render): / -> not checked within the crawl's time bound of 0.2 s"
    ]


def test_nothing_listening_is_a_problem_per_page() -> None:
    for url, _ in serve():
        closed = url
    report = crawl(closed, ["/"], time_bound=5)
    assert len(report.problems) == 1
    assert report.problems[0].answer.startswith("ConnectionRefusedError")


def test_a_redirect_elsewhere_is_another_origin_and_a_huge_page_is_read_in_part() -> None:
    huge = b'<a href="/static/bg.png">bg</a>' + b"<p>" + b"x" * MAX_PARSED_BYTES + b'<a href="/x">'
    odd = {
        **SITE,
        "/": (200, "text/html", b'<a href="/docs">d</a><a href="/huge.html">h</a>'),
        "/docs/": (200, "text/html", b"<p>docs</p>"),
        "/huge.html": (200, "text/html", huge),
    }

    class Elsewhere(Handler):
        def do_GET(self) -> None:
            if self.path in ("/loop-a", "/loop-b"):
                self.send_response(301)
                self.send_header("Location", "/loop-b" if self.path == "/loop-a" else "/loop-a")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", "https://other.example/landing")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    odd["/"] = (200, "text/html", odd["/"][2] + b'<a href="/away">away</a>')
    odd["/about.html"] = (200, "text/html", b'<a href="/loop-a">a loop</a>')
    for url, handler in serve_handler(Elsewhere, site=odd):
        report = crawl(url, ["/", "/about.html"], time_bound=10)
        requests = handler.requests
    assert [problem.line() for problem in report.problems] in (
        ["/about.html: /loop-a -> a redirect loop"],
        ["/loop-a: /loop-b -> a redirect loop"],
    )
    assert report.external_origins == ["https://other.example"]
    assert report.partly_parsed == ["/huge.html"]
    # What stood past the first 8 MiB (/x) was not seen; what stood before it was fetched.
    assert "/x" not in requests and requests["/static/bg.png"] == 1
    assert report.redirects == 4  # /docs, /away and the loop's two


def test_nginx_serves_each_extension_as_the_type_the_crawl_expects() -> None:
    """A linked PDF, font or video must pass the crawl: nginx.conf's types table and the
    crawl's expectations name the same type for every extension nginx knows, and nginx
    knows the common web ones."""
    template = (Path(__file__).parent.parent / "templates" / "nginx.conf.j2").read_text()
    block = re.search(r"\btypes \{(.*?)\}", template, re.DOTALL)
    assert block is not None, "nginx.conf.j2 has no types block"
    served: dict[str, str] = {}
    for line in block.group(1).splitlines():
        words = line.strip().rstrip(";").split()
        if words and not words[0].startswith("#"):
            served.update((extension, words[0]) for extension in words[1:])
    disagreeing = {
        extension: (name, expected_type(f"/file.{extension}"))
        for extension, name in served.items()
        if media_type(name) != expected_type(f"/file.{extension}")
    }
    assert not disagreeing, disagreeing
    common = "html css js json svg png jpg gif webp avif ico woff woff2 ttf pdf mp4 webm mp3 xml"
    assert not set(common.split()) - set(served), set(common.split()) - set(served)
