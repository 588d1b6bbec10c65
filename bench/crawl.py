"""The crawl scenario of the bench: the smoke test's crawl of a generated 1,000-page site
served by a shipit container, against `wget --spider -r` and the same crawl over one
connection (bench/README.md, "Crawl").

The site: an archive page (/) that links every page, 1,000 pages of about 5 kB of text
that each link their neighbours and three other pages, a stylesheet that @imports another
and names two background images with url(), a script, a logo and 200 images (one per five
pages). Every side must find every page and asset, or the bench fails.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import _table
from harness.services import free_port

CRAWL_HEADING = "## Crawl of a 1,000-page site"
PAGES = 1000
IMAGES = 200
# "A 1,000-page site is crawled in a few seconds" (issue 25): the smoke test's crawl itself.
TARGET_SECONDS = 5.0
SEED = 25
WORDS = [
    "ship",
    "site",
    "image",
    "nginx",
    "layer",
    "digest",
    "registry",
    "smoke",
    "page",
    "asset",
    "crawl",
    "link",
    "style",
    "build",
    "render",
    "template",
    "static",
    "cache",
    "header",
    "origin",
    "reference",
    "request",
    "answer",
]
LAYOUT = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="shipit-build" content="{{ build.id }}">
  <title>{{ page.name }}</title>
  <link rel="stylesheet" href="/static/css/site.css">
  <link rel="icon" href="/static/logo.svg" type="image/svg+xml">
  <script src="/static/app.js" defer></script>
</head>
<body data-shipit-page="{{ page.name }}">
  <header><a href="/"><img src="/static/logo.svg" alt=""> archive</a>
  <a href="https://example.com/about">about us elsewhere</a></header>
  <main>
{% block content %}{% endblock %}
  </main>
</body>
</html>
"""


def page_name(number: int) -> str:
    return f"p{number:04d}"


def generate_site(project: Path, repo: Path) -> int:
    """The project: the repository's Dockerfile and nginx.conf templates, the rest generated.
    Returns the number of assets a crawl must find."""
    rng = random.Random(SEED)  # noqa: S311 - test data
    templates, static = project / "templates", project / "site" / "static"
    templates.mkdir(parents=True)
    (static / "css").mkdir(parents=True)
    (static / "img").mkdir()
    for name in ("Dockerfile.j2", "nginx.conf.j2"):
        shutil.copy(repo / "templates" / name, templates / name)
    shutil.copy(repo / "site" / "site.toml", project / "site" / "site.toml")
    (templates / "_layout.html.j2").write_text(LAYOUT)
    block = '{% extends "_layout.html.j2" %}\n{% block content %}\n'
    (templates / "404.html.j2").write_text(block + "<h1>not here</h1>\n{% endblock %}\n")
    archive = "".join(
        f'<li><a href="/{page_name(n)}.html">page {n}</a></li>\n' for n in range(1, PAGES + 1)
    )
    (templates / "index.html.j2").write_text(f"{block}<ul>\n{archive}</ul>\n{{% endblock %}}\n")
    for number in range(1, PAGES + 1):
        text = " ".join(rng.choice(WORDS) for _ in range(700))
        links = [max(1, number - 1), min(PAGES, number + 1), *rng.sample(range(1, PAGES + 1), 3)]
        anchors = " ".join(f'<a href="{page_name(n)}.html#top">{n}</a>' for n in links)
        image = f"../static/img/i{number % IMAGES:03d}.svg"
        (templates / f"{page_name(number)}.html.j2").write_text(
            f'{block}<p>{text}</p>\n<p>{anchors}</p>\n<img src="{image}" '
            f'srcset="{image} 1x, {image}?2x 2x" alt="">\n{{% endblock %}}\n'
        )
    (static / "css" / "site.css").write_text(
        '@import "print.css";\nbody { background: url(../img/bg.svg) }\n'
        "header { background-image: url('../img/header.svg') }\n"
    )
    (static / "css" / "print.css").write_text("@media print { header { display: none } }\n")
    (static / "app.js").write_text("document.documentElement.dataset.js = 'on';\n")
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="{}"/></svg>\n'
    (static / "logo.svg").write_text(svg.format(8))
    for name in ("bg", "header"):
        (static / "img" / f"{name}.svg").write_text(svg.format(7))
    for number in range(IMAGES):
        (static / "img" / f"i{number:03d}.svg").write_text(svg.format(number % 8 + 1))
    # the stylesheet, the one it imports, its two images, the script, the logo, and each
    # image twice (srcset's "?2x" is another URL)
    return 6 + 2 * IMAGES


class CrawlBench:
    def __init__(
        self,
        work: Path,
        repo: Path,
        run_id: str,
        shipit_cmd: list[str],
        python: str,
        base_env: dict[str, str],
        base_image: str,
        say: Callable[[str], None],
        failure: type[Exception],
    ) -> None:
        self.project = work / "crawl-site"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.repo = repo
        self.image = f"shipit-bench/{run_id}-crawl"
        self.shipit_cmd = shipit_cmd
        self.python = python
        self.env = {
            **base_env,
            "SHIPIT_PROJECT": str(self.project),
            "SHIPIT_IMAGE": self.image,
            "SHIPIT_BASE_IMAGE": base_image,
            "SHIPIT_CRAWL_TIMEOUT": "120",
        }
        self.say = say
        self.failure = failure

    def _run(self, label: str, args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        done = subprocess.run(
            args, env=self.env, capture_output=True, text=True, check=False, cwd=self.project
        )
        seconds = time.perf_counter() - started
        (self.logs / f"crawl-{label}.log").write_text(
            f"$ {' '.join(args)}\nexit {done.returncode} after {seconds:.3f} s\n"
            f"--- stdout\n{done.stdout[-20000:]}\n--- stderr\n{done.stderr[-20000:]}"
        )
        return seconds, done

    def run(self, runs: int) -> dict[str, Any]:
        assets = generate_site(self.project, self.repo)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.say(f"crawl: building and running a {PAGES}-page site on {url}")
        _, started = self._run("run", [*self.shipit_cmd, "run", "--port", str(port), "--json"])
        if started.returncode != 0:
            raise self.failure(f"crawl: shipit run failed: {started.stderr.strip()[-2000:]}")
        first = json.loads(started.stdout)["smoke"]["crawl"]
        expected = (PAGES + 1, assets)
        sides: dict[str, list[float]] = {"shipit": [], "shipit_process": [], "one": [], "wget": []}
        for number in range(runs):
            seconds, done = self._run(f"smoke-{number}", [*self.shipit_cmd, "smoke", url, "--json"])
            crawled = json.loads(done.stdout)["crawl"] if done.stdout else {}
            if done.returncode != 0 or (crawled["pages"], crawled["assets"]) != expected:
                raise self.failure(f"crawl: shipit smoke found {crawled}, expected {expected}")
            sides["shipit"].append(crawled["seconds"])
            sides["shipit_process"].append(seconds)
            sides["one"].append(self._one_connection(url, expected, number))
            sides["wget"].append(self._wget(url, number))
        return {
            "pages": expected[0],
            "assets": expected[1],
            "runs": runs,
            "run_crawl_seconds": first["seconds"],
            "median": {side: round(statistics.median(v), 3) for side, v in sides.items()},
            "samples": {side: [round(s, 3) for s in v] for side, v in sides.items()},
            "target_seconds": TARGET_SECONDS,
        }

    def _one_connection(self, url: str, expected: tuple[int, int], number: int) -> float:
        """The same crawl, one worker: what the connections in parallel give."""
        code = (
            "import json, sys; from shipit.crawl import crawl; "
            f"r = crawl({url!r}, ['/'], 120, workers=1); "
            "print(json.dumps([r.pages, r.assets, len(r.problems), r.seconds]))"
        )
        _, done = self._run(f"one-{number}", [self.python, "-c", code])
        pages, assets, problems, seconds = json.loads(done.stdout or "[0, 0, 1, 0]")
        if (pages, assets) != expected or problems:
            raise self.failure(f"crawl: the one-connection crawl found {pages} pages, {assets}")
        return float(seconds)

    def _wget(self, url: str, number: int) -> float:
        log = self.logs / f"crawl-wget-{number}.txt"
        args = ["wget", "--spider", "-r", "-l", "inf", "-nv", "-e", "robots=off", "-o", str(log)]
        seconds, done = self._run(f"wget-{number}", [*args, f"{url}/"])
        if done.returncode != 0:
            raise self.failure(f"crawl: wget --spider exited {done.returncode} (see {log})")
        return seconds

    def close(self) -> None:
        subprocess.run(
            [*self.shipit_cmd, "stop", "-q"], env=self.env, capture_output=True, check=False
        )
        listed = subprocess.run(
            ["docker", "images", "-q", self.image], capture_output=True, text=True, check=False
        )
        ids = sorted(set(listed.stdout.split()))
        if ids:
            subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True, check=False)


def crawl_markdown(results: dict[str, Any]) -> str:
    medians = results["median"]
    shipit = medians["shipit"]
    rows = [
        ("shipit's crawl (8 connections; `crawl.seconds` of `shipit smoke URL --json`)", shipit),
        (
            "`shipit smoke URL` as a whole process (start-up, the other checks)",
            medians["shipit_process"],
        ),
        ("the same crawl over one connection", medians["one"]),
        ("`wget --spider -r -l inf` (one connection, whole process)", medians["wget"]),
    ]
    verdict = "met" if shipit <= results["target_seconds"] else "MISSED"
    load = " ".join(f"{value:.2f}" for value in results.get("load_average_start") or ())
    table = _table(
        ("side", "median s", "side / shipit's crawl"),
        [(name, f"{value:.2f}", f"{value / shipit:.1f}") for name, value in rows if value],
    )
    return (
        f"{CRAWL_HEADING}\n\n"
        f"{results['pages']} pages and {results['assets']} assets, {results['runs']} runs per "
        f"side, {results.get('date', '')}, load average {load} at the start. "
        f"Target: the crawl within {results['target_seconds']:g} s: "
        f"**{verdict}**.\n\n{table}\n"
    )
