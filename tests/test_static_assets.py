"""static(), stylesheet rewriting and precompression in the render, without an engine: names
follow content in dependency order, bad input is one line, and the .gz bytes are fixed."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from shipit.assets import FingerprintedNameError, fingerprinted, gzipped, looks_fingerprinted
from shipit.errors import TemplateError
from shipit.render import RenderedSite, render_site
from tests.conftest import copy_example

BASE = "nginx:1.27.3-bookworm"
FILES = "shipit/site/static/"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "p")


def _static(example: Path) -> Path:
    return example / "site" / "static"


def _page_with(example: Path, body: str) -> None:
    (example / "templates" / "assets.html.j2").write_text(body)


def _fingerprinted_names(site: RenderedSite, stem: str) -> list[str]:
    pattern = re.compile(rf"{re.escape(FILES)}{stem}\.[0-9a-f]{{12}}\.[a-z]+$")
    return [name for name in site.files if pattern.match(name)]


def test_names_carry_the_content_hash() -> None:
    sha = "3f2a1b9c0d4e" + "0" * 52
    assert fingerprinted("img/a.png", sha) == "img/a.3f2a1b9c0d4e.png"
    assert fingerprinted("jquery.min.js", sha) == "jquery.min.3f2a1b9c0d4e.js"
    assert fingerprinted("LICENSE", sha) == "LICENSE.3f2a1b9c0d4e"
    assert looks_fingerprinted("a/app.3f2a1b9c.js") and looks_fingerprinted("x.DEADBEEF00.css")
    assert not looks_fingerprinted("style.css") and not looks_fingerprinted("v1.2.3.css")
    assert not looks_fingerprinted("cafe/readme.txt")


def test_a_stylesheet_names_what_it_references_by_fingerprint(example: Path) -> None:
    static = _static(example)
    (static / "fonts").mkdir()
    (static / "fonts" / "body.woff2").write_bytes(b"font")
    (static / "base.css").write_text("body { color: red; }\n")
    (static / "site.css").write_text(
        '@import "base.css";\n'
        "@font-face { src: url(fonts/body.woff2?v=1#x); }\n"
        "h1 { background: url('/static/logo.svg'); }\n"
        "p { background: url(data:image/png;base64,AAAA); }\n"
        "a { background: url(https://example.com/x.png); }\n"
        "b { background: url(missing.png); }\n"
    )
    _page_with(example, "{{ static('site.css') }}")
    site = render_site(example, BASE)
    [name] = _fingerprinted_names(site, "site")
    assert site.files["shipit/site/assets.html"].decode() == "/" + name.removeprefix("shipit/site/")
    text = site.files[name].decode()
    [base] = _fingerprinted_names(site, "base")
    [logo] = _fingerprinted_names(site, "logo")
    assert f'@import "{base.rsplit("/", 1)[1]}";' in text
    assert re.search(r"url\(fonts/body\.[0-9a-f]{12}\.woff2\?v=1#x\)", text), text
    assert f"url('/static/{logo.rsplit('/', 1)[1]}')" in text
    # Other origins, data: and a file the site lacks stay as they were (the crawl reports
    # a missing one).
    for kept in ("data:image/png;base64,AAAA", "https://example.com/x.png", "url(missing.png)"):
        assert kept in text
    # The originals stay under their own names, unchanged.
    assert site.files[f"{FILES}site.css"] == (static / "site.css").read_bytes()
    # The stylesheet's name covers what it names: a new logo renames it.
    (static / "logo.svg").write_text("<svg/>" * 100)
    assert _fingerprinted_names(render_site(example, BASE), "site") != [name]


def test_only_what_templates_name_is_fingerprinted(example: Path) -> None:
    (_static(example) / "unused.css").write_text("x { color: blue; }\n")
    site = render_site(example, BASE)
    assert _fingerprinted_names(site, "unused") == []
    assert len(_fingerprinted_names(site, "style")) == 1
    [logo] = _fingerprinted_names(site, "logo")
    assert site.files[logo] == (_static(example) / "logo.svg").read_bytes()


@pytest.mark.parametrize("name", ["nope.css", "../site.toml", "", "style.css?v=1"])
def test_a_static_that_names_no_file_is_one_line_with_template_and_line(
    example: Path, name: str
) -> None:
    _page_with(example, f"<p>one</p>\n<link href=\"{{{{ static('{name}') }}}}\">\n")
    with pytest.raises(TemplateError) as caught:
        render_site(example, BASE)
    message = caught.value.one_line()
    assert message.startswith("templates/assets.html.j2:2: static(")
    assert "\n" not in message


def test_stylesheets_that_import_each_other_are_refused(example: Path) -> None:
    (_static(example) / "a.css").write_text('@import "b.css";\n')
    (_static(example) / "b.css").write_text("@import url(a.css);\n")
    _page_with(example, "{{ static('a.css') }}")
    with pytest.raises(TemplateError, match=r"import each other: site/static/a\.css -> "):
        render_site(example, BASE)


def test_a_file_that_looks_fingerprinted_is_refused(example: Path) -> None:
    (_static(example) / "img").mkdir()
    (_static(example) / "img" / "photo.0123abcd.jpg").write_bytes(b"jpg")
    with pytest.raises(FingerprintedNameError) as caught:
        render_site(example, BASE)
    assert caught.value.one_line().startswith("site/static/img/photo.0123abcd.jpg looks")


def test_text_above_the_bound_gets_a_fixed_gz(example: Path) -> None:
    static = _static(example)
    (static / "small.txt").write_text("tiny\n")
    (static / "data.json").write_text('{"k": "' + "v" * 2000 + '"}')
    (static / "photo.png").write_bytes(b"\x89PNG" + b"\0" * 5000)
    (static / "random.txt").write_bytes(bytes(range(256)) * 2)  # does not shrink
    (static / "own.txt").write_text("mine " * 100)
    (static / "own.txt.gz").write_bytes(b"the site's own")
    files = render_site(example, BASE).files
    assert f"{FILES}small.txt.gz" not in files
    assert f"{FILES}photo.png.gz" not in files
    assert gzip.decompress(files[f"{FILES}data.json.gz"]) == (static / "data.json").read_bytes()
    assert files[f"{FILES}own.txt.gz"] == b"the site's own"
    assert gzip.decompress(files["shipit/site/index.html.gz"]) == files["shipit/site/index.html"]
    # No name and no time in the header, the same bytes every time.
    packed = files[f"{FILES}data.json.gz"]
    assert packed[3] == 0 and packed[4:8] == b"\0\0\0\0"
    assert packed == gzipped((static / "data.json").read_bytes())
    assert not any(name.startswith("shipit/nginx.conf.") for name in files)


def test_nginx_gets_gzip_static_only_when_the_base_has_it(example: Path) -> None:
    with_module = render_site(example, BASE).files["shipit/nginx.conf"].decode()
    without = render_site(example, BASE, gzip_static=False).files["shipit/nginx.conf"].decode()
    assert "\n    gzip_static on;" in with_module
    assert "gzip_static on;" not in without
    for config in (with_module, without):
        assert "\n    gzip on;" in config and "\n    gzip_vary on;" in config
