"""What the crawl reads out of pages and stylesheets, and where each reference points."""

from __future__ import annotations

from shipit.crawl import expected_type, media_type
from shipit.references import (
    css_references,
    html_references,
    origin_of,
    request_target,
    srcset_urls,
    stylesheet_references,
)

PAGE = "http://127.0.0.1:8080/docs/guide.html"


def urls(html: str, page: str = PAGE) -> list[str]:
    return [reference.url for reference in html_references(html, page)]


def test_every_kind_of_reference_of_a_page() -> None:
    html = """<!doctype html><html><head>
      <link rel="stylesheet" href="/static/style.css">
      <script src="app.js"></script>
      <style>body { background: url(bg.png) }</style>
    </head><body style="background-image: url('/img/body.png')">
      <a href="intro.html">intro</a>
      <img src="../img/a.png" srcset="../img/a-2x.png 2x, ../img/a-3x.png 3x">
      <picture><source srcset="/img/b.webp" type="image/webp"></picture>
      <video poster="/img/poster.jpg"><source src="/media/clip.mp4"></video>
      <object data="/doc.pdf"></object>
    </body></html>"""
    assert urls(html) == [
        "http://127.0.0.1:8080/static/style.css",
        "http://127.0.0.1:8080/docs/app.js",
        "http://127.0.0.1:8080/docs/bg.png",
        "http://127.0.0.1:8080/img/body.png",
        "http://127.0.0.1:8080/docs/intro.html",
        "http://127.0.0.1:8080/img/a.png",
        "http://127.0.0.1:8080/img/a-2x.png",
        "http://127.0.0.1:8080/img/a-3x.png",
        "http://127.0.0.1:8080/img/b.webp",
        "http://127.0.0.1:8080/img/poster.jpg",
        "http://127.0.0.1:8080/media/clip.mp4",
        "http://127.0.0.1:8080/doc.pdf",
    ]


def test_fragments_and_non_http_schemes_are_skipped_query_strings_kept() -> None:
    html = """<a href="#top">top</a><a href="">self</a><a href="mailto:a@b.c">m</a>
      <a href="tel:+3312345">t</a><a href="javascript:void(0)">j</a>
      <img src="data:image/png;base64,AAAA"><a href="  /faq.html#install  ">faq</a>
      <link href="/style.css?v=3#x" rel="stylesheet"><a href="?page=2">next</a>"""
    assert urls(html) == [
        "http://127.0.0.1:8080/faq.html",
        "http://127.0.0.1:8080/style.css?v=3",
        "http://127.0.0.1:8080/docs/guide.html?page=2",
    ]
    written = [reference.written for reference in html_references(html, PAGE)]
    assert written == ["/faq.html#install", "/style.css?v=3#x", "?page=2"]


def test_base_href_changes_how_relative_references_resolve() -> None:
    html = """<head><base href="/static/v2/"><base href="/ignored/"></head>
      <img src="logo.svg"><a href="../../about.html">about</a><a href="/abs.html">abs</a>"""
    assert urls(html) == [
        "http://127.0.0.1:8080/static/v2/logo.svg",
        "http://127.0.0.1:8080/about.html",
        "http://127.0.0.1:8080/abs.html",
    ]


def test_other_origins_and_protocol_relative_references_resolve_absolute() -> None:
    html = '<script src="//cdn.example.com/x.js"></script><a href="https://example.org:8443/">'
    found = urls(html)
    assert found == ["http://cdn.example.com/x.js", "https://example.org:8443/"]
    assert [origin_of(url) for url in found] == [
        "http://cdn.example.com",
        "https://example.org:8443",
    ]
    assert origin_of("HTTP://Example.COM:80/a") == "http://example.com"


def test_srcset_candidates_with_and_without_descriptors() -> None:
    assert srcset_urls("a.png") == ["a.png"]
    assert srcset_urls(" a.png 1x,b.png 2x , c.png  3x") == ["a.png", "b.png", "c.png"]
    assert srcset_urls("a.png, b.png 480w") == ["a.png", "b.png"]
    assert srcset_urls("a.png,, b.png") == ["a.png", "b.png"]
    assert srcset_urls("img/x,y.png 1x, z.png 2x") == ["img/x,y.png", "z.png"]
    assert srcset_urls("a.png (max-width: 1,2) 1x, b.png") == ["a.png", "b.png"]
    assert srcset_urls("") == []


def test_stylesheet_url_and_import_forms_comments_ignored() -> None:
    css = """@import "base.css"; @import url('print.css') print;
      /* url(commented.png) */ .a { background: url( "img/a.png" ) }
      .b { background: URL(img/b.png?v=2#f) } .c { mask: url(data:image/svg+xml;utf8,<svg>) }
      @font-face { src: url(/fonts/x.woff2) format("woff2"), url('../y.woff') }"""
    assert css_references(css) == [
        "base.css",
        "print.css",
        "img/a.png",
        "img/b.png?v=2#f",
        "data:image/svg+xml;utf8,<svg>",  # dropped when resolved, below
        "/fonts/x.woff2",
        "../y.woff",
    ]
    resolved = stylesheet_references(css, "http://127.0.0.1:8080/static/css/site.css")
    assert [reference.url for reference in resolved] == [
        "http://127.0.0.1:8080/static/css/base.css",
        "http://127.0.0.1:8080/static/css/print.css",
        "http://127.0.0.1:8080/static/css/img/a.png",
        "http://127.0.0.1:8080/static/css/img/b.png?v=2",
        "http://127.0.0.1:8080/fonts/x.woff2",
        "http://127.0.0.1:8080/static/y.woff",
    ]


def test_request_targets_are_encoded_once() -> None:
    assert request_target("http://h/a b/é.png?q=a b") == "/a%20b/%C3%A9.png?q=a%20b"
    assert request_target("http://h/already%20encoded.png") == "/already%20encoded.png"
    assert request_target("http://h") == "/"


def test_the_type_an_extension_implies() -> None:
    assert expected_type("/static/style.css") == "text/css"
    assert expected_type("/static/app.js") == expected_type("/m.mjs") == "text/javascript"
    assert expected_type("/favicon.ico") == "image/x-icon"
    assert expected_type("/fonts/x.woff2") == "font/woff2"
    assert expected_type("/docs/") == "text/html"
    assert expected_type("/about") is None  # no extension: any type
    assert expected_type("/backup.tar.gz") is None  # compressed: servers name it differently
    assert media_type("Text/CSS; charset=utf-8") == "text/css"
    assert media_type("application/javascript") == "text/javascript"
