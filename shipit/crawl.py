"""The crawl of the smoke test: every page the render produced and every same-origin URL a
page or a stylesheet references, each fetched once, over a few keep-alive connections.

Each worker thread holds one http.client connection and fetches what the main thread hands
it; the main thread alone keeps the books (what was seen, who referenced it, what broke), so
none of that state is shared. Only HTML and CSS bodies are read for parsing, up to
MAX_PARSED_BYTES; other bodies are read only to keep the connection, or the connection is
dropped when they are large. The whole crawl stops at its time bound: whatever is left is a
problem, named by the page that referenced it.
"""

from __future__ import annotations

import functools
import http.client
import mimetypes
import queue
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.json_fields import fields_of
from shipit.references import (
    Reference,
    html_references,
    origin_of,
    request_target,
    stylesheet_references,
)

DEFAULT_WORKERS = 8
REQUEST_TIMEOUT = 5.0
MAX_PARSED_BYTES = 8 * 1024 * 1024
# A body this small is read to the end to keep its connection; a larger one that is not
# parsed costs more to read than to reconnect on loopback.
DRAINED_BYTES = 1024 * 1024
CHUNK_BYTES = 256 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
PARSED_TYPES = frozenset({"text/html", "text/css"})

# Types older Pythons lack, and the name current ones give JavaScript.
_ADDED_TYPES = (
    ("font/woff", ".woff"),
    ("font/woff2", ".woff2"),
    ("font/ttf", ".ttf"),
    ("font/otf", ".otf"),
    ("text/javascript", ".js"),
    ("text/javascript", ".mjs"),
)
_SAME_TYPE = {
    "application/javascript": "text/javascript",
    "application/x-javascript": "text/javascript",
    "image/vnd.microsoft.icon": "image/x-icon",
    "text/xml": "application/xml",
    "application/font-woff": "font/woff",
    "application/x-font-woff": "font/woff",
    "application/x-font-ttf": "font/ttf",
}


def media_type(content_type: str) -> str:
    """'Text/CSS; charset=utf-8' -> 'text/css', one name for types known by two."""
    name = content_type.split(";", 1)[0].strip().lower()
    return _SAME_TYPE.get(name, name)


@functools.cache
def _type_table() -> mimetypes.MimeTypes:
    """Python's table, not the machine's /etc/mime.types, so that every machine expects the
    same; made at the first use (it reads the machine's files too, for the module's own)."""
    table = mimetypes.MimeTypes()
    for name, extension in _ADDED_TYPES:
        table.add_type(name, extension)
    return table


def expected_type(path: str) -> str | None:
    """The type a URL path's extension implies; None when it implies none (no extension,
    an unknown one, or a compressed file whose type servers name differently)."""
    if path.endswith("/"):
        return "text/html"
    guessed, encoding = _type_table().guess_type(urllib.parse.unquote(path), strict=False)
    if guessed is None or encoding is not None:
        return None
    return media_type(guessed)


@dataclass(frozen=True)
class Problem:
    page: str  # the page or stylesheet that references it; "" for a page of the render
    reference: str
    answer: str
    also_from: int = 0  # how many more times other pages reference it

    def line(self) -> str:
        where = self.page or "(a page of the render)"
        plural = "s" if self.also_from > 1 else ""
        more = f" (and {self.also_from} more reference{plural})" if self.also_from else ""
        return f"{where}: {self.reference} -> {self.answer}{more}"

    def to_json(self) -> dict[str, Any]:
        return fields_of(self, "page", "reference", "answer", "also_from")


@dataclass
class CrawlReport:
    time_bound: float
    pages: int = 0
    assets: int = 0
    redirects: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    external_origins: list[str] = field(default_factory=list)
    # Pages or stylesheets larger than MAX_PARSED_BYTES: references past that were not seen.
    partly_parsed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = f"{self.pages} pages, {self.assets} assets in {self.seconds:.2f} s"
        if self.external_origins:
            count = len(self.external_origins)
            text += f"; {count} other origin{'s' if count > 1 else ''} not fetched"
        if self.problems:
            text += f"; {len(self.problems)} broken"
        return text

    def partly_parsed_note(self) -> str:
        limit = f"{MAX_PARSED_BYTES // 2**20} MiB"
        return f"read only the first {limit} of {', '.join(self.partly_parsed)}"

    def to_json(self) -> dict[str, Any]:
        return {
            **fields_of(self, "ok", "pages", "assets", "redirects", "seconds", "time_bound"),
            "problems": [problem.to_json() for problem in self.problems],
            **fields_of(self, "external_origins", "partly_parsed"),
        }


@dataclass(frozen=True)
class Seed:
    """A response the smoke test already has (the home page, the 404 page): not fetched
    again. `checked` is False for an answer that is not meant to be 200 (the 404 page),
    whose references are crawled all the same."""

    url: str
    status: int
    content_type: str
    body: bytes
    checked: bool = True
    label: str = ""


@dataclass(frozen=True)
class _Outcome:
    url: str
    problem: str = ""
    kind: str = ""  # "page", "asset" or "redirect" when it answered as it should
    references: Sequence[Reference] = ()
    partly_parsed: bool = False


@dataclass
class _Entry:
    page: str
    written: str
    expected: str | None
    others: int = 0


class _Worker(threading.Thread):
    def __init__(self, crawl: Crawl) -> None:
        super().__init__(daemon=True, name="shipit-crawl")
        self.crawl = crawl
        self.connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        while True:
            task = self.crawl.tasks.get()
            if task is None or self.crawl.stopped.is_set():
                break
            url, expected = task
            try:
                outcome = self.fetch(url, expected)
            # Any failure at all is this URL's answer: a worker that died would leave the
            # crawl waiting for it until its time bound.
            except TimeoutError:
                self.close()
                outcome = _Outcome(url, problem=f"no answer within {REQUEST_TIMEOUT:g} s")
            except Exception as exc:  # noqa: BLE001
                self.close()
                outcome = _Outcome(url, problem=f"{type(exc).__name__}: {exc}".rstrip(": "))
            self.crawl.outcomes.put(outcome)
        self.close()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _request(self, target: str) -> http.client.HTTPResponse:
        # A keep-alive connection the server closed since its last answer fails at once:
        # one more try on a new connection tells that apart from a server that is down.
        for attempt in (1, 2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = self.crawl.connect()
            try:
                self.connection.request("GET", target, headers=self.crawl.headers)
                return self.connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def fetch(self, url: str, expected: str | None) -> _Outcome:
        target = request_target(url)
        response = self._request(target)
        content_type = response.getheader("Content-Type", "")
        if response.status in REDIRECTS:
            self._discard(response)
            return self.crawl.redirect_outcome(url, response.status, response.getheader("Location"))
        parsed_type = media_type(content_type) if response.status == 200 else ""
        if parsed_type in PARSED_TYPES:
            body, whole = self._read(response, MAX_PARSED_BYTES)
            return self.crawl.outcome(url, response.status, content_type, body, expected, whole)
        self._discard(response)
        return self.crawl.outcome(url, response.status, content_type, b"", expected, True)

    def _read(self, response: http.client.HTTPResponse, limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes of the body, stopping at the crawl's time bound; whether the
        body was read whole (the connection is dropped when it was not)."""
        pieces: list[bytes] = []
        size = 0
        while size < limit:
            if self.crawl.stopped.is_set():
                self.close()
                raise TimeoutError("the crawl's time bound passed while reading")
            piece = response.read(min(CHUNK_BYTES, limit - size))
            if not piece:
                return b"".join(pieces), True
            pieces.append(piece)
            size += len(piece)
        whole = response.read(1) == b""
        if not whole:
            self.close()
        return b"".join(pieces), whole

    def _discard(self, response: http.client.HTTPResponse) -> None:
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) <= DRAINED_BYTES:
            self._read(response, DRAINED_BYTES)
        else:
            self.close()


class Crawl:
    """One crawl of the site at base_url. Build it, seed it, start it from some URLs."""

    def __init__(self, base_url: str, time_bound: float, workers: int = DEFAULT_WORKERS) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.origin = origin_of(base_url)
        self.hostname = (parts.hostname or "").lower()
        self.prefix = parts.path.rstrip("/")
        self.netloc = parts.netloc
        self.https = parts.scheme == "https"
        self.time_bound = time_bound
        self.workers = max(1, workers)
        self.headers = {"User-Agent": "shipit-smoke"}
        self.tasks: queue.SimpleQueue[tuple[str, str | None] | None] = queue.SimpleQueue()
        self.outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self.stopped = threading.Event()
        self.report = CrawlReport(time_bound=time_bound)
        self._entries: dict[str, _Entry] = {}
        self._done: set[str] = set()
        self._external: set[str] = set()
        self._broken: dict[str, str] = {}  # URL: its answer, made a Problem once all is seen
        self._redirects: dict[str, str] = {}  # URL: where it redirects to
        self._waiting = 0

    def connect(self) -> http.client.HTTPConnection:
        # The time bound is the main thread's to keep: a worker still waiting then is left
        # behind (a daemon), and its URL reported as not checked in time.
        if self.https:
            return http.client.HTTPSConnection(self.netloc, timeout=REQUEST_TIMEOUT)
        return http.client.HTTPConnection(self.netloc, timeout=REQUEST_TIMEOUT)

    def url_of(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def page_of(self, url: str) -> str:
        """How problems name a URL of this site: its path (and query) on the server."""
        if origin_of(url) != self.origin:
            return url
        target = request_target(url)
        return (target.removeprefix(self.prefix) or "/") if self.prefix else target

    # What workers report

    def outcome(
        self,
        url: str,
        status: int,
        content_type: str,
        body: bytes,
        expected: str | None,
        whole: bool,
    ) -> _Outcome:
        if status != 200:
            reason = http.client.responses.get(status, "")
            return _Outcome(url, problem=f"{status} {reason}".strip())
        served = media_type(content_type)
        if expected is not None and served != expected:
            return _Outcome(
                url, problem=f"200 {served or 'without a content type'}, expected {expected}"
            )
        if served not in PARSED_TYPES:
            return _Outcome(url, kind="asset")
        text = body.decode("utf-8", errors="replace")
        if served == "text/html":
            found, kind = html_references(text, url), "page"
        else:
            found, kind = stylesheet_references(text, url), "asset"
        return _Outcome(url, kind=kind, references=found, partly_parsed=not whole)

    def redirect_outcome(self, url: str, status: int, location: str | None) -> _Outcome:
        if not location:
            return _Outcome(url, problem=f"{status} without a Location")
        target = urllib.parse.urljoin(url, location.strip())
        parts = urllib.parse.urlsplit(target)
        if (parts.hostname or "").lower() == self.hostname:
            # Same site: nginx names its own listen port in redirects, not the published
            # one, so the path is followed on the address this crawl reaches.
            target = self.origin + request_target(target)
        return _Outcome(url, kind="redirect", references=(Reference(location.strip(), target),))

    # The books, kept by the main thread only

    def _add(self, reference: Reference, page: str, fallback: str | None = None) -> None:
        """Queues a reference met on `page` unless it was met before; `fallback` is the type
        expected when its path implies none."""
        # Most references were met before (the layout's links on every page): looked up first.
        entry = self._entries.get(reference.url)
        if entry is not None:
            if page and page != entry.page:
                entry.others += 1
                # Problems name the first page in path order, whichever was parsed first.
                if entry.page and page < entry.page:
                    entry.page, entry.written = page, reference.written
            return
        origin = origin_of(reference.url)
        if origin != self.origin:
            self._external.add(origin)
            return
        expected = expected_type(urllib.parse.urlsplit(reference.url).path) or fallback
        self._entries[reference.url] = _Entry(page, reference.written, expected)
        self._waiting += 1
        self.tasks.put((reference.url, expected))

    def _record(self, outcome: _Outcome) -> None:
        self._done.add(outcome.url)
        entry = self._entries.get(outcome.url)
        if outcome.problem:
            self._broken[outcome.url] = outcome.problem
        elif outcome.kind == "page":
            self.report.pages += 1
        elif outcome.kind == "asset":
            self.report.assets += 1
        elif outcome.kind == "redirect":
            self.report.redirects += 1
            self._redirects[outcome.url] = outcome.references[0].url
            if self._loops(outcome.url):
                self._broken[outcome.url] = "a redirect loop"
        if outcome.partly_parsed:
            self.report.partly_parsed.append(self.page_of(outcome.url))
        page = self.page_of(outcome.url)
        # A redirect passes on the type its own reference was expected to have (a page of
        # the render that redirects to /about/ is still a page).
        fallback = entry.expected if entry and outcome.kind == "redirect" else None
        for reference in outcome.references:
            self._add(reference, page, fallback)

    def _loops(self, url: str) -> bool:
        """Whether the redirects known so far lead from `url` back to it (the last of the
        loop's redirects to be answered finds it)."""
        seen, step = {url}, self._redirects.get(url)
        while step is not None:
            if step in seen:
                return step == url
            seen.add(step)
            step = self._redirects.get(step)
        return False

    def _problem(self, url: str, answer: str) -> Problem:
        entry = self._entries.get(url) or _Entry("", self.page_of(url), None)
        path = self.page_of(url)
        reference = entry.written if entry.written == path else f"{entry.written} ({path})"
        if not entry.page:
            reference = path
        return Problem(entry.page, reference, answer, entry.others)

    # The crawl itself

    def _seed(self, seed: Seed) -> None:
        url = self.url_of(seed.url)
        self._done.add(url)
        if seed.checked:
            self._entries[url] = _Entry("", self.page_of(url), "text/html")
            self._record(
                self.outcome(url, seed.status, seed.content_type, seed.body, "text/html", True)
            )
            return
        # An answer that is not meant to be 200 (the 404 page): only its references count.
        page = self.outcome(url, 200, seed.content_type, seed.body, None, True)
        for reference in page.references:
            self._add(reference, seed.label or self.page_of(url))

    def run(self, start: Iterable[str], seeds: Sequence[Seed] = ()) -> CrawlReport:
        """Fetches the paths in `start` (pages: they must answer text/html) and everything
        they and the seeds reference, within the time bound."""
        began = time.monotonic()
        deadline = began + self.time_bound
        for seed in seeds:
            self._seed(seed)
        for path in start:
            self._add(Reference(path, self.url_of(path)), "", "text/html")
        workers = [_Worker(self) for _ in range(self.workers if self._waiting else 0)]
        for worker in workers:
            worker.start()
        try:
            while self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    outcome = self.outcomes.get(timeout=left)
                except queue.Empty:
                    break
                self._waiting -= 1
                self._record(outcome)
        finally:
            self.stopped.set()
            for _ in workers:
                self.tasks.put(None)
        bound = f"not checked within the crawl's time bound of {self.time_bound:g} s"
        for url in self._entries:
            if url not in self._done:
                self._broken[url] = bound
        problems = (self._problem(url, answer) for url, answer in self._broken.items())
        self.report.problems = sorted(problems, key=lambda one: (one.page, one.reference))
        self.report.seconds = round(time.monotonic() - began, 3)
        self.report.external_origins = sorted(self._external)
        return self.report


def crawl(
    base_url: str,
    start: Iterable[str],
    time_bound: float,
    seeds: Sequence[Seed] = (),
    workers: int = DEFAULT_WORKERS,
) -> CrawlReport:
    return Crawl(base_url, time_bound, workers).run(start, seeds)
