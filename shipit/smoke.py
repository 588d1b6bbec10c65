"""The smoke test: real HTTP requests against a served site, and readiness polling.

Uses only the standard library so that `shipit smoke URL` starts fast and works against any
server, not only a shipit container.
"""

from __future__ import annotations

import http.client
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shipit.errors import SmokeError
from shipit.json_fields import fields_of

if TYPE_CHECKING:
    # Imported by run_smoke: the stages that only import this module (build) need no crawl.
    from shipit.crawl import CrawlReport, Seed

SECURITY_HEADERS = (
    "X-Content-Type-Options",
    "Content-Security-Policy",
    "Referrer-Policy",
    "X-Frame-Options",
)
BUILD_META = re.compile(rb'<meta name="shipit-build" content="([^"]*)"')
NOT_FOUND_MARKER = b'data-shipit-page="404"'
REQUEST_TIMEOUT = 5.0
DEFAULT_CRAWL_TIMEOUT = 30.0
# Lines of broken references under the error; --json carries every one.
MAX_PROBLEM_LINES = 50


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SmokeReport:
    url: str
    expected_build_id: str
    served_build_id: str = ""
    checks: list[Check] = field(default_factory=list)
    # {"path", "width", "height"} when a screenshot was taken, {"path", "error"} when not.
    screenshot: dict[str, Any] | None = None
    crawl: CrawlReport | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            **fields_of(self, "url", "ok", "expected_build_id", "served_build_id"),
            "checks": [asdict(check) for check in self.checks],
            "screenshot": self.screenshot,
            "crawl": self.crawl.to_json() if self.crawl else None,
        }

    def error(self, hint: str) -> SmokeError:
        """The failure of this smoke test: one line per broken reference under it."""
        problems = self.crawl.problems if self.crawl else []
        lines = [problem.line() for problem in problems[:MAX_PROBLEM_LINES]]
        if len(problems) > MAX_PROBLEM_LINES:
            lines.append(
                f"... and {len(problems) - MAX_PROBLEM_LINES} more (--json lists every one)"
            )
        return SmokeError(
            "smoke test failed: " + "; ".join(f"{c.name} ({c.detail})" for c in self.failed),
            hint,
            details="\n".join(lines),
            problems=tuple(problem.to_json() for problem in problems),
        )


def fetch(base_url: str, path: str, timeout: float = REQUEST_TIMEOUT) -> Response:
    """One GET, no redirects followed, no proxy: the smoke test must see this server only."""
    parsed = urllib.parse.urlsplit(base_url)
    connection_class = (
        http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parsed.netloc, timeout=timeout)
    try:
        connection.request(
            "GET", parsed.path.rstrip("/") + path, headers={"User-Agent": "shipit-smoke"}
        )
        response = connection.getresponse()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Response(status=response.status, headers=headers, body=body)
    finally:
        connection.close()


def wait_until_ready(
    base_url: str,
    deadline_seconds: float,
    still_running: Callable[[], bool],
    first_interval: float = 0.01,
    max_interval: float = 0.1,
) -> bool:
    """Polls /healthz until it answers 200; False once the deadline passes or the server died.

    nginx usually answers within tens of milliseconds of its container's start, so the first
    polls come quickly; the interval doubles up to max_interval so that a slow start costs
    the engine few inspections."""
    deadline = time.monotonic() + deadline_seconds
    interval = first_interval
    while True:
        try:
            if fetch(base_url, "/healthz", timeout=min(2.0, deadline_seconds)).status == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        if not still_running() or time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 2, max_interval)


def _check_get(report: SmokeReport, base_url: str, path: str, name: str) -> Response | None:
    try:
        return fetch(base_url, path)
    except (OSError, http.client.HTTPException) as exc:
        report.checks.append(Check(name, False, f"GET {path} failed: {exc}"))
        return None


def run_smoke(
    base_url: str,
    expected_build_id: str = "",
    pages: tuple[str, ...] = ("/",),
    crawl_timeout: float = DEFAULT_CRAWL_TIMEOUT,
) -> SmokeReport:
    """The checks of / , /healthz and an unknown path, then the crawl of every page in
    `pages` and of all they reference (the home page and the 404 page are not fetched again
    for it)."""
    from shipit.crawl import Seed, crawl

    report = SmokeReport(url=base_url, expected_build_id=expected_build_id)
    seeds: list[Seed] = []
    home = _check_get(report, base_url, "/", "home page")
    if home is not None:
        content_type = home.headers.get("content-type", "")
        report.checks.append(
            Check("home page", home.status == 200, f"GET / answered {home.status}")
        )
        report.checks.append(
            Check(
                "html",
                content_type.startswith("text/html"),
                f"content-type {content_type or 'missing'}",
            )
        )
        seeds.append(Seed("/", home.status, content_type, home.body))
        match = BUILD_META.search(home.body)
        report.served_build_id = match.group(1).decode() if match else ""
        if expected_build_id:
            report.checks.append(
                Check(
                    "build id",
                    report.served_build_id == expected_build_id,
                    f"served {report.served_build_id or 'no build id'}, "
                    f"expected {expected_build_id}",
                )
            )
        else:
            report.checks.append(
                Check(
                    "build id",
                    bool(report.served_build_id),
                    f"served {report.served_build_id or 'no build id'}",
                )
            )
        for header in SECURITY_HEADERS:
            value = home.headers.get(header.lower())
            report.checks.append(Check(f"header {header}", bool(value), value or "missing"))

    health = _check_get(report, base_url, "/healthz", "healthz")
    if health is not None:
        report.checks.append(
            Check("healthz", health.status == 200, f"GET /healthz answered {health.status}")
        )

    # A fresh random path each run, so no cache or real page can answer it.
    missing_path = f"/shipit-smoke-{secrets.token_hex(6)}"
    missing = _check_get(report, base_url, missing_path, "404 page")
    if missing is not None:
        is_404_page = missing.status == 404 and NOT_FOUND_MARKER in missing.body
        report.checks.append(
            Check(
                "404 page",
                is_404_page,
                f"GET {missing_path} answered {missing.status}"
                + ("" if NOT_FOUND_MARKER in missing.body else " without the site's 404 page"),
            )
        )
        content_type = missing.headers.get("content-type", "")
        if content_type.startswith("text/html"):
            seeds.append(
                Seed(missing_path, 404, content_type, missing.body, checked=False, label="404 page")
            )
    if home is not None:
        # Nothing answered /: every page would fail the same way, said once already.
        report.crawl = crawl(base_url, pages, crawl_timeout, seeds)
        report.checks.append(Check("crawl", report.crawl.ok, report.crawl.summary()))
    return report
