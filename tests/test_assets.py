"""Fingerprinted and precompressed assets on the real engine: the example site, built and run,
serves static() names for a year, pages with no-cache and an ETag (a 304 on revalidation),
and a stylesheet's .gz as it was written; bad static() input is one line naming where."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.services import free_port
from shipit.attest.site_files import rendered_site_of
from shipit.base_image import NGINX_MODULES_FILE, BaseImage, has_gzip_static
from shipit.config import LOCAL_BASE_IMAGE, load_settings
from shipit.engine import Engine
from shipit.errors import ExitCode
from shipit.pipeline import build
from shipit.render import render_site
from tests.conftest import Project, shipit_containers
from tests.leftovers import image_references

IMMUTABLE = "public, max-age=31536000, immutable"
SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "permissions-policy",
    "x-shipit-build",
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Served:
    port: int
    context: Path

    def get(self, path: str, **headers: str) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            answer = {key.lower(): value for key, value in response.getheaders()}
            return Answer(response.status, answer, body)
        finally:
            connection.close()


@pytest.fixture
def served(engine: Engine, project: Project, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    started = project.shipit("run", "--port", str(port), "--json")
    assert started.code == 0, started.output
    context = tmp_path / "context"
    rendered = project.shipit("render", "--out", str(context))
    assert rendered.code == 0, rendered.output
    try:
        yield Served(port, context)
    finally:
        project.shipit("stop")


def _linked(page: bytes, pattern: str) -> str:
    found = re.search(pattern, page.decode())
    assert found, f"no {pattern} in the page"
    return found.group(0)


def test_fingerprinted_assets_are_immutable_and_pages_revalidate(served: Served) -> None:
    home = served.get("/")
    assert home.status == 200
    stylesheet = _linked(home.body, r"/static/style\.[0-9a-f]{12}\.css")
    logo = _linked(home.body, r"/static/logo\.[0-9a-f]{12}\.svg")
    for path in (stylesheet, logo):
        asset = served.get(path)
        assert asset.status == 200, path
        assert asset.headers["cache-control"] == IMMUTABLE, path
        assert all(name in asset.headers for name in SECURITY_HEADERS), asset.headers
    # The stylesheet names the logo by its fingerprinted name too.
    assert logo.rsplit("/", 1)[1].encode() in served.get(stylesheet).body

    assert home.headers["cache-control"] == "no-cache"
    assert all(name in home.headers for name in SECURITY_HEADERS), home.headers
    etag = home.headers["etag"]
    again = served.get("/", **{"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.headers["cache-control"] == "no-cache"
    assert served.get("/", **{"If-None-Match": '"other"'}).status == 200

    plain = served.get("/static/style.css")  # the name written by hand still works, briefly
    assert plain.status == 200 and plain.headers["cache-control"] == "max-age=3600"
    assert all(name in plain.headers for name in SECURITY_HEADERS), plain.headers
    health = served.get("/healthz")
    assert health.status == 200 and all(name in health.headers for name in SECURITY_HEADERS)
    missing = served.get("/static/nothing.0123456789ab.css")
    assert missing.status == 404 and "cache-control" not in missing.headers


def test_a_stylesheet_is_sent_from_its_gz(served: Served) -> None:
    stylesheet = _linked(served.get("/").body, r"/static/style\.[0-9a-f]{12}\.css")
    on_disk = served.context / "shipit" / "site" / stylesheet.lstrip("/")
    packed = on_disk.with_name(on_disk.name + ".gz").read_bytes()
    answer = served.get(stylesheet, **{"Accept-Encoding": "gzip"})
    assert answer.status == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["vary"] == "Accept-Encoding"
    # The very bytes shipit wrote, not nginx's own compression of the file.
    assert int(answer.headers["content-length"]) == len(packed)
    assert answer.body == packed
    assert gzip.decompress(answer.body) == on_disk.read_bytes()
    assert served.get(stylesheet).body == on_disk.read_bytes()  # no gzip asked, none sent


def test_the_build_learned_that_the_base_image_has_gzip_static(
    served: Served, engine: Engine
) -> None:
    known = json.loads(
        (served.context.parent / "site-project" / ".shipit" / NGINX_MODULES_FILE).read_text()
    )
    base = engine.image(LOCAL_BASE_IMAGE)
    assert base is not None and known == {base.id: True}


def test_a_base_whose_nginx_lacks_gzip_static_gets_on_the_fly_gzip(
    engine: Engine, project: Project, tmp_path: Path
) -> None:
    """An image whose /usr/sbin/nginx is built without the module (here: a file without its
    strings), made with docker import; the answer is kept by image id."""
    tag = f"{project.image}-base:plain"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        binary = b"\x7fELF nginx built with --with-http_gzip_module only"
        member = tarfile.TarInfo("usr/sbin/nginx")
        member.size, member.mode = len(binary), 0o755
        tar.addfile(member, io.BytesIO(binary))
    subprocess.run(
        ["docker", "import", "-", tag], input=layer.getvalue(), check=True, capture_output=True
    )
    try:
        settings = load_settings(project.root, environ=project.env())
        image = engine.image(tag)
        assert image is not None
        base = BaseImage(tag, image.id, "present")
        assert has_gzip_static(settings, engine, base) is False
        local = engine.image(LOCAL_BASE_IMAGE)
        assert local is not None
        assert has_gzip_static(settings, engine, BaseImage(LOCAL_BASE_IMAGE, local.id, "present"))
        known = json.loads((settings.state_dir / NGINX_MODULES_FILE).read_text())
        assert known == {image.id: False, local.id: True}
        assert shipit_containers(project.image) == []
        # A build on it renders nginx.conf without gzip_static (the image holds that one),
        # and the site of the unchanged image, rendered again for an attestation, is the same.
        on_plain = load_settings(project.root, environ=project.env(SHIPIT_BASE_IMAGE=tag))
        built = build(on_plain, engine)
        held = engine.image_file_archive(built.image_id, "/srv/shipit/nginx.conf")
        assert held is not None and b"gzip on;" in held and b"gzip_static on;" not in held
        assert rendered_site_of(on_plain, built).context_digest == built.context_digest
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=True, capture_output=True)
    site = render_site(project.root, tag, gzip_static=False)
    config = site.files["shipit/nginx.conf"].decode()
    assert "gzip_static on;" not in config
    assert "\n    gzip on;" in config and "gzip_vary on;" in config
    assert "gzip_static on;" in render_site(project.root, tag).files["shipit/nginx.conf"].decode()


def test_rendered_twice_is_the_same_context(project: Project, tmp_path: Path) -> None:
    digests = []
    for name in ("one", "two"):
        rendered = project.shipit("render", "--out", str(tmp_path / name), "--json")
        assert rendered.code == 0, rendered.output
        report = json.loads(rendered.stdout)
        digests.append(report["context_digest"])
    assert digests[0] == digests[1]
    assert set(report["assets"]) == {"/static/logo.svg", "/static/style.css"}
    assert re.fullmatch(r"/static/style\.[0-9a-f]{12}\.css", report["assets"]["/static/style.css"])
    assert report["precompressed"] == sum(name.endswith(".gz") for name in report["files"]) > 0
    first = sorted(path.relative_to(tmp_path / "one") for path in (tmp_path / "one").rglob("*"))
    assert any(path.name.endswith(".css.gz") for path in first)
    for relative in first:
        one, two = tmp_path / "one" / relative, tmp_path / "two" / relative
        assert one.is_dir() or one.read_bytes() == two.read_bytes(), relative


def test_static_of_a_missing_file_names_the_template_and_line(project: Project) -> None:
    base = project.root / "templates" / "_base.html.j2"
    base.write_text(base.read_text().replace("static('logo.svg')", "static('lgo.svg')", 1))
    result = project.shipit("build")
    assert result.code == ExitCode.TEMPLATE, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "templates/_base.html.j2:9" in last and "site/static/lgo.svg" in last, last
    assert image_references(project.image) == []


def test_a_file_named_like_a_fingerprint_is_refused(project: Project) -> None:
    (project.root / "site" / "static" / "app.3f2a1b9c.js").write_text("let a = 1;\n")
    result = project.shipit("build")
    assert result.code == ExitCode.TEMPLATE, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "site/static/app.3f2a1b9c.js looks fingerprinted" in last, last
    assert image_references(project.image) == []
