"""What a page or a stylesheet references, and where each reference points: pure logic over
text, no network, so that every rule the crawl follows is tested on its own.

HTML is read with the standard library's html.parser (href, src, srcset, poster and data
attributes, <base href>, <style> elements and style attributes); CSS with two regular
expressions (url() and @import) once its comments are gone.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

# Attributes whose value is one URL; srcset holds several.
URL_ATTRIBUTES = frozenset({"href", "src", "poster", "data"})
# Elements whose href names no resource to fetch (<base> changes how the others resolve).
NOT_FETCHED_HREF = frozenset({"base"})
# A link with one of these schemes is not a resource of the site: never fetched, not listed.
SKIPPED_SCHEMES = frozenset({"mailto", "tel", "sms", "javascript", "data", "about", "blob"})

_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)"'\s]*))\s*\)""", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"""@import\s+(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
# Characters a request line may carry as they are; anything else is percent-encoded
# (a space or a non-ASCII letter in a file name), and existing escapes are kept.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True)
class Reference:
    written: str  # as the page or stylesheet wrote it
    url: str  # absolute, without its fragment


def css_references(css: str) -> list[str]:
    """Every url() and @import of a stylesheet (or a style attribute), in order."""
    text = _CSS_COMMENT.sub(" ", css)
    found = []
    for pattern in (_CSS_IMPORT, _CSS_URL):
        for match in pattern.finditer(text):
            value = next((group for group in match.groups() if group is not None), "")
            found.append((match.start(), value))
    return [value for _, value in sorted(found)]


def srcset_urls(value: str) -> list[str]:
    """The URLs of a srcset ("a.png 1x, b.png 2x"), as the HTML standard splits it: a URL
    runs up to whitespace, and trailing commas end a candidate that has no descriptor."""
    urls = []
    position, end = 0, len(value)
    while position < end:
        while position < end and (value[position].isspace() or value[position] == ","):
            position += 1
        start = position
        while position < end and not value[position].isspace():
            position += 1
        url = value[start:position]
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            depth = 0  # descriptors run to the next comma outside parentheses
            while position < end:
                char = value[position]
                if char == "(":
                    depth += 1
                elif char == ")":
                    depth = max(0, depth - 1)
                elif char == "," and depth == 0:
                    break
                position += 1
        if url:
            urls.append(url)
    return urls


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base_href = ""
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "href" and tag in NOT_FETCHED_HREF:
                # Only the first <base href> counts, as browsers do.
                self.base_href = self.base_href or value
            elif name in URL_ATTRIBUTES:
                if name != "data" or tag == "object":
                    self.found.append(value)
            elif name == "srcset":
                self.found.extend(srcset_urls(value))
            elif name == "style":
                self.found.extend(css_references(value))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found.extend(css_references(data))


def html_references(html: str, page_url: str) -> list[Reference]:
    """Every resource a page references, resolved against its <base href> (itself resolved
    against the page's URL) or the page's URL."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    base = page_url
    if parser.base_href:
        base = urllib.parse.urljoin(page_url, parser.base_href.strip())
    return list(resolved(parser.found, base))


def stylesheet_references(css: str, stylesheet_url: str) -> list[Reference]:
    return list(resolved(css_references(css), stylesheet_url))


def resolved(written: Iterable[str], base: str) -> Iterator[Reference]:
    """References as absolute URLs; fragment-only ones and those of SKIPPED_SCHEMES dropped."""
    # Only a query ("?page=2") needs the whole base; any other reference resolves the same
    # against the base's folder, which every page of that folder shares (the cache's key).
    folder = base[: base.rfind("/") + 1] if "/" in base.partition("//")[2] else base
    for text in written:
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        scheme = _SCHEME.match(stripped)
        if scheme and scheme.group(1).lower() in SKIPPED_SCHEMES:
            continue
        yield Reference(stripped, _absolute(base if stripped[0] == "?" else folder, stripped))


@functools.lru_cache(maxsize=8192)
def _absolute(base: str, reference: str) -> str:
    try:
        return urllib.parse.urldefrag(urllib.parse.urljoin(base, reference))[0]
    except ValueError:  # an invalid IPv6 host, say: kept as written, answered as broken
        return reference


def origin_of(url: str) -> str:
    """scheme://host[:port], the port left out when it is the scheme's default."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host, port = (parts.hostname or ""), parts.port
    except ValueError:
        return f"{scheme}://{parts.netloc}"
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def request_target(url: str) -> str:
    """The path and query to send for an absolute URL, percent-encoded where it must be."""
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        return f"{path}?{urllib.parse.quote(parts.query, safe=_QUERY_SAFE)}"
    return path
