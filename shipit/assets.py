"""Fingerprinted and precompressed static files: what `static()` gives a template, and the
`.gz` nginx's gzip_static serves. Pure logic over bytes; render.py wires it into Jinja.

A fingerprinted name carries a prefix of the file's sha256 (`style.3f2a1b9c0d4e.css`), so
its bytes never change under it and nginx serves it with a lifetime of a year. A stylesheet's
references to other static files (`url()`, `@import`) are rewritten to their fingerprinted
names first, and its own hash is taken over the rewritten bytes: changing an image changes
the name of every stylesheet that shows it. Only what a template names with `static()` (and
what those stylesheets reach) is fingerprinted; every file also keeps its own name, served
with a short lifetime, so references written by hand keep working.

The `.gz` beside a file is deflated by CPython's zlib at one fixed level, in a gzip member
without a name or a time: equal input gives equal bytes, and the context digest stays the
same from one render to the next.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from urllib.parse import unquote

from shipit.errors import TemplateError
from shipit.inputs import SourceFile, Sources

STATIC_KEY = "site/static/"  # where static files live among the render's inputs
STATIC_URL = "/static/"
FINGERPRINT_LENGTH = 12
# What nginx.conf.j2 caches for a year: a last name part of 8 or more hex digits before the
# extension. A file of the site named like that would be cached for a year under a name
# that does not follow its content, so such a name is refused (FingerprintedNameError).
FINGERPRINTED = re.compile(r"\.[0-9a-f]{8,}(?:\.[a-z0-9]+)?$", re.IGNORECASE)
COMPRESSIBLE = frozenset({".html", ".css", ".js", ".svg", ".json", ".txt", ".xml"})
# Below this a gzip member's 18 bytes of framing eat most of the saving; nginx's on-the-fly
# gzip (gzip_min_length) uses the same bound.
PRECOMPRESS_MIN_BYTES = 256
# A larger text file is compressed by nginx on the fly instead: its .gz would be held in
# memory through the build.
PRECOMPRESS_MAX_BYTES = 8 * 1024 * 1024
GZIP_LEVEL = 9
# A gzip member header without a name or a time (XFL 2: the best compression; OS unknown).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
_CSS_REFERENCE = re.compile(
    rb"""url\(\s*(?P<q1>['"]?)(?P<url>[^'")\s]+)(?P=q1)\s*\)"""
    rb"""|@import\s+(?P<q2>['"])(?P<imported>[^'"]+)(?P=q2)""",
    re.IGNORECASE,
)


class FingerprintedNameError(TemplateError):
    default_hint = (
        "rename it without the hex part: shipit fingerprints the files templates name with "
        "static() itself"
    )


class AssetError(Exception):
    """A static() that names no file; render.py adds the template and line it came from."""


def looks_fingerprinted(name: str) -> bool:
    return FINGERPRINTED.search(posixpath.basename(name)) is not None


def refuse_fingerprinted_names(sources: Sources) -> None:
    for key, _ in sources.items(STATIC_KEY):
        if looks_fingerprinted(key):
            raise FingerprintedNameError(
                f"{key} looks fingerprinted already (a hex part before its extension), and "
                "nginx would cache it for a year under a name that does not follow its content"
            )


def fingerprinted(name: str, sha256: str) -> str:
    """`dir/style.css` as `dir/style.<hash>.css` (a name without an extension gets it last)."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.rpartition(".")
    if not stem:  # no extension, or only a leading dot
        stem, dot, extension = base, "", ""
    marked = f"{stem}.{sha256[:FINGERPRINT_LENGTH]}{dot}{extension}"
    return f"{folder}/{marked}" if folder else marked


def gzipped(data: bytes) -> bytes:
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    body = deflater.compress(data) + deflater.flush()
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return _GZIP_HEADER + body + trailer


def compressible(name: str, size: int) -> bool:
    extension = posixpath.splitext(name)[1].lower()
    return extension in COMPRESSIBLE and PRECOMPRESS_MIN_BYTES <= size <= PRECOMPRESS_MAX_BYTES


class Assets:
    """The fingerprinted files of one render: `url` answers a template's static(), and
    `generated` (rewritten stylesheets) and `aliases` (any other file, the same bytes under
    a second name) are what it adds to the context, by their path in it."""

    def __init__(
        self, sources: Sources, served: str, read: Callable[[str, SourceFile], bytes]
    ) -> None:
        self._sources = sources
        self._served = served
        self._read = read
        self._files: dict[str, SourceFile] | None = None
        self._hashes: dict[str, str] = {}  # input key -> the sha256 its name carries
        self._resolving: list[str] = []
        self.generated: dict[str, bytes] = {}
        self.aliases: dict[str, SourceFile] = {}

    def url(self, name: str) -> str:
        """The URL path of `name` (relative to site/static/) under its fingerprinted name."""
        relative = posixpath.normpath(name.lstrip("/")) if name else ""
        key = STATIC_KEY + relative
        if not relative or relative.startswith("..") or "?" in name or "#" in name:
            raise AssetError(f"static({name!r}) does not name a file under site/static/")
        if key not in self._static_files():
            raise AssetError(f"static({name!r}): there is no {key}")
        return self._url_of(fingerprinted(key, self._fingerprint(key)))

    def urls(self) -> tuple[tuple[str, str], ...]:
        """(URL as written, fingerprinted URL) of every file fingerprinted, in name order."""
        return tuple(
            (self._url_of(key), self._url_of(fingerprinted(key, sha256)))
            for key, sha256 in sorted(self._hashes.items())
        )

    def _static_files(self) -> dict[str, SourceFile]:
        # Listed once, at the first static(): a site whose templates never call it pays nothing.
        if self._files is None:
            self._files = dict(self._sources.items(STATIC_KEY))
        return self._files

    def _url_of(self, key: str) -> str:
        return "/" + key.removeprefix("site/")

    def _fingerprint(self, key: str) -> str:
        """The sha256 that the fingerprinted name of `key` carries; adds that file."""
        if key in self._hashes:
            return self._hashes[key]
        if key in self._resolving:
            cycle = " -> ".join([*self._resolving[self._resolving.index(key) :], key])
            raise AssetError(f"stylesheets import each other: {cycle}")
        source = self._static_files()[key]
        if key.lower().endswith(".css"):
            self._resolving.append(key)
            try:
                data = self._rewritten(key, self._read(f"{self._served}/{key}", source))
            finally:
                self._resolving.pop()
            sha256 = hashlib.sha256(data).hexdigest()
            self.generated[f"{self._served}/{fingerprinted(key, sha256)}"] = data
        else:
            sha256 = source.sha256
            self.aliases[f"{self._served}/{fingerprinted(key, sha256)}"] = source
        self._hashes[key] = sha256
        return sha256

    def _rewritten(self, key: str, data: bytes) -> bytes:
        """The stylesheet with each reference to a static file of the site renamed; any other
        reference (another origin, data:, a missing file) stays as it is."""
        folder = posixpath.dirname(self._url_of(key))

        def rename(match: re.Match[bytes]) -> bytes:
            group = "url" if match.group("url") is not None else "imported"
            reference = match.group(group).decode("utf-8", "surrogateescape")
            target = self._target(folder, reference)
            if target is None:
                return match.group(0)
            path, rest = _split_suffix(reference)
            renamed = fingerprinted(path, self._fingerprint(target))
            start, end = (offset - match.start() for offset in match.span(group))
            whole = match.group(0)
            new = (renamed + rest).encode("utf-8", "surrogateescape")
            return whole[:start] + new + whole[end:]

        return _CSS_REFERENCE.sub(rename, data)

    def _target(self, folder: str, reference: str) -> str | None:
        path, _ = _split_suffix(reference)
        if not path or path.startswith(("//", "#")) or ":" in path.split("/", 1)[0]:
            return None
        resolved = posixpath.normpath(posixpath.join(folder, unquote(path)))
        if not resolved.startswith(STATIC_URL):
            return None
        key = "site" + resolved
        return key if key in self._static_files() else None


def _split_suffix(reference: str) -> tuple[str, str]:
    """A reference's path, and its query or fragment (kept as they are when renamed)."""
    cuts = [index for index in (reference.find("?"), reference.find("#")) if index >= 0]
    cut = min(cuts, default=len(reference))
    return reference[:cut], reference[cut:]


def precompressed(
    entries: Iterator[tuple[str, int, Callable[[], bytes]]],
) -> dict[str, bytes]:
    """The `.gz` of every compressible entry (name, size, its bytes) under `site/` that
    deflates smaller, unless the site holds a file of that name itself. Equal bytes (a file
    and its fingerprinted twin) are deflated once."""
    made: dict[str, bytes] = {}
    by_content: dict[str, bytes | None] = {}
    own: set[str] = set()
    for name, size, content in entries:
        if name.endswith(".gz"):
            own.add(name)
        if not compressible(name, size):
            continue
        data = content()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in by_content:
            packed = gzipped(data)
            by_content[digest] = packed if len(packed) < len(data) else None
        packed_or_none = by_content[digest]
        if packed_or_none is not None:
            made[f"{name}.gz"] = packed_or_none
    return {name: data for name, data in made.items() if name not in own}
