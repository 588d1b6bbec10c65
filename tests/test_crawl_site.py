"""The smoke test's crawl on the real engine: a site built and served by shipit, whole or
broken, and nothing pushed when it is broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.registry_reader import RegistryReader
from harness.services import free_port, moto_ecr_password
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import Project, PublishProject, shipit_containers
from tests.reliability import Recorder

GALLERY = """{% extends "_base.html.j2" %}
{% block content %}
<link rel="stylesheet" href="/static/gallery.css">
<p><a href="/contact.html">Contact us</a> <a href="mailto:team@example.com">mail</a>
<a href="#top">top</a> <a href="https://example.com/partner">partner</a></p>
<img src="/static/photo.gif" alt="">
{% endblock %}
"""
BROKEN_LINES = [
    "/gallery.html: /contact.html -> 404 Not Found",
    "/gallery.html: /static/photo.gif -> 200 text/plain, expected image/gif",
    "/static/gallery.css: missing-bg.png (/static/missing-bg.png) -> 404 Not Found",
]


def break_the_site(root: Path) -> None:
    """A page no other page links to (only the render knows it) with a link to a page that
    does not exist, a stylesheet whose url() names a missing image, and a GIF that nginx
    is told to serve as text."""
    (root / "templates" / "gallery.html.j2").write_text(GALLERY)
    static = root / "site" / "static"
    (static / "gallery.css").write_text(".g { background: url(missing-bg.png) }\n")
    (static / "photo.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    nginx_conf = root / "templates" / "nginx.conf.j2"
    text = nginx_conf.read_text()
    assert "image/gif gif;" in text
    nginx_conf.write_text(text.replace("image/gif gif;", "text/plain gif;"))


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " -> " in line]


def test_a_whole_site_is_crawled_page_by_page(engine: Engine, project: Project) -> None:
    port = free_port()
    started = project.shipit("run", "--port", str(port), "--json")
    try:
        assert started.code == 0, started.output
        crawled = json.loads(started.stdout)["smoke"]["crawl"]
        assert crawled["ok"] is True and crawled["problems"] == []
        # /, /about.html; the stylesheet and the logo, whatever their names.
        assert crawled["pages"] >= 2 and crawled["assets"] >= 2
        # Without a render at hand, `smoke URL` finds the same site from / by its links.
        again = project.shipit("smoke", f"http://127.0.0.1:{port}", "--json")
        assert again.code == 0, again.output
        found = json.loads(again.stdout)["crawl"]
        assert (found["pages"], found["assets"]) == (crawled["pages"], crawled["assets"])
        assert "crawl" in project.shipit("smoke", f"http://127.0.0.1:{port}").stdout
    finally:
        project.shipit("stop")


@pytest.mark.reliability(
    "a page linking to a missing page, a stylesheet's url() naming a missing image, an asset "
    "served with the wrong content type (shipit ship)",
    "exit 8 (SMOKE), one line per problem naming page, reference and answer; no container, "
    "no tag in either registry",
)
def test_a_broken_site_fails_one_line_per_reference_and_nothing_is_pushed(
    engine: Engine, publish_project: PublishProject, reliability: Recorder
) -> None:
    project = publish_project
    assert project.ecr and project.hub
    break_the_site(project.root)
    result = project.shipit("ship", "--json")
    reliability.result(result)
    reliability.observe(f"{len(problem_lines(result.stderr))} problem lines")
    assert result.code == ExitCode.SMOKE, result.output
    assert problem_lines(result.stderr) == BROKEN_LINES
    error = json.loads(result.stdout)["error"]
    assert "crawl" in error["message"]
    assert [(p["page"], p["answer"]) for p in error["problems"]] == [
        ("/gallery.html", "404 Not Found"),
        ("/gallery.html", "200 text/plain, expected image/gif"),
        ("/static/gallery.css", "404 Not Found"),
    ]
    assert shipit_containers(project.image) == []
    with RegistryReader(project.ecr.host, "AWS", moto_ecr_password()) as ecr:
        assert ecr.tags(project.ecr_repository) == []
    with RegistryReader(project.hub.host, project.hub.username or "", project.hub_token) as hub:
        assert hub.tags(project.hub_repository) == []


@pytest.mark.reliability(
    "a page too large to crawl in the time bound (50,000 references, SHIPIT_CRAWL_TIMEOUT=0.5)",
    "exit 8 (SMOKE), lines naming the page and what was not checked; no container",
)
def test_a_page_too_large_to_crawl_in_the_time_bound_fails(
    engine: Engine, project: Project, reliability: Recorder
) -> None:
    (project.root / "site" / "static" / "dot.svg").write_text("<svg/>")
    (project.root / "templates" / "big.html.j2").write_text(
        '{% for i in range(50000) %}<img src="/static/dot.svg?n={{ i }}">{% endfor %}\n'
    )
    env = project.env(SHIPIT_CRAWL_TIMEOUT="0.5")
    result = project.shipit("run", "--port", str(free_port()), "--json", env=env)
    reliability.result(result)
    assert result.code == ExitCode.SMOKE, result.output
    lines = problem_lines(result.stderr)
    bound = "not checked within the crawl's time bound of 0.5 s"
    assert lines and all(line.endswith(bound) for line in lines), lines
    # Either the big page itself, or what it references, by name.
    assert lines[0].startswith(("(a page of the render): /big.html", "/big.html: /static/dot.svg"))
    assert json.loads(result.stdout)["error"]["problems"]
    assert shipit_containers(project.image) == []
