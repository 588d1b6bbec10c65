"""Every file of the site layer, with where the image holds it and its checksums, for the SBOM.

The rendered site (render.RenderedSite) knows every name and the sha256 of every file
already (a page's bytes are in memory, a static file's hash is the input scan's). SPDX 2.3
also wants each file's SHA-1, which only reading the file gives: a static file is read once
more here, through the same check that it still holds what was hashed (ContextFiles.chunks),
so the SBOM never names bytes the layer does not hold. What a file's SHA-1 is depends only on
its bytes, so it is kept by their SHA-256 (Sha1Cache, in the user's cache): the next ship of
the site reads only the files that changed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shipit.assemble import instructions_of
from shipit.registries.ecr_cache import cache_directory, write_atomically

if TYPE_CHECKING:
    from shipit.config import Settings
    from shipit.pipeline import BuildResult
    from shipit.render import RenderedSite


@dataclass(frozen=True)
class SiteFile:
    # Where the image holds it (/srv/shipit/site/index.html), or, for a Dockerfile that
    # copies the site in no plain way, the build context's name (shipit/site/index.html).
    path: str
    size: int
    sha256: str  # hex
    sha1: str  # hex


def site_destination(dockerfile: str, served: str) -> str:
    """The folder the Dockerfile copies the context's `served` folder into (the bundled
    Dockerfile's `COPY shipit/ /srv/shipit/`), or "" when it copies it in no plain way: then
    the files are named as the context names them."""
    parsed = instructions_of(dockerfile)
    if not isinstance(parsed, list):
        return ""
    for instruction in parsed:
        words = instruction.arguments.split()
        if instruction.keyword != "COPY" or len(words) != 2 or words[0].startswith("--"):
            continue
        if posixpath.normpath(words[0]) == served and words[1].startswith("/"):
            return posixpath.normpath(words[1])
    return ""


# Entries kept: the files of a few big sites. A line is 106 bytes.
KEPT_SHA1S = 100_000
_LINE = re.compile(rb"([0-9a-f]{64}) ([0-9a-f]{40})")


@dataclass
class Sha1Cache:
    """SHA-1 by SHA-256 of the files of the sites signed here, newest last, one line each."""

    path: Path | None
    known: dict[str, str] = field(default_factory=dict)
    added: bool = False

    @classmethod
    def for_user(cls, environ: Mapping[str, str] | None = None) -> Sha1Cache:
        path = cache_directory(os.environ if environ is None else environ) / "sha1-by-sha256"
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            lines = []
        known = {}
        for line in lines:
            match = _LINE.fullmatch(line)
            if match:
                known[match.group(1).decode()] = match.group(2).decode()
        return cls(path, known)

    def get(self, sha256: str) -> str | None:
        return self.known.get(sha256)

    def put(self, sha256: str, sha1: str) -> None:
        self.known.pop(sha256, None)
        self.known[sha256] = sha1
        self.added = True

    def save(self) -> None:
        """Best effort: a cache that cannot be written only means reading the files again."""
        if self.path is None or not self.added:
            return
        kept = list(self.known.items())[-KEPT_SHA1S:]
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(self.path, b"".join(f"{a} {b}\n".encode() for a, b in kept))
        except OSError:
            pass


def site_files(site: RenderedSite, sha1s: Sha1Cache | None = None) -> Iterator[SiteFile]:
    """The files the site layer holds, in the context's path order; a static file's SHA-1
    from `sha1s` when it knows its SHA-256 (else read, and learnt: save it at the end)."""
    from shipit.render import SERVED, ContextFiles

    sha1s = sha1s or Sha1Cache(None)

    destination = site_destination(site.files.generated["Dockerfile"].decode(), SERVED)
    prefix = f"{SERVED}/"
    for name, entry in site.files.entries():
        if not name.startswith(prefix):
            continue
        path = posixpath.join(destination, name[len(prefix) :]) if destination else name
        # SPDX 2.3 names every file by its SHA-1 too; SHA-256 is what it is checked by.
        sha1 = hashlib.sha1()  # noqa: S324
        if isinstance(entry, bytes):
            sha1.update(entry)
            yield SiteFile(path, len(entry), hashlib.sha256(entry).hexdigest(), sha1.hexdigest())
            continue
        known = sha1s.get(entry.sha256)
        if known is None:
            for chunk in ContextFiles.chunks(name, entry):
                sha1.update(chunk)
            known = sha1.hexdigest()
            sha1s.put(entry.sha256, known)
        yield SiteFile(path, entry.size, entry.sha256, known)


def every_site_file(site: RenderedSite, environ: Mapping[str, str] | None = None) -> list[SiteFile]:
    """site_files with the user's Sha1Cache, read before and saved after: the signing side's
    call."""
    sha1s = Sha1Cache.for_user(environ)
    found = list(site_files(site, sha1s))
    sha1s.save()
    return found


def rendered_site_of(settings: Settings, built: BuildResult) -> RenderedSite:
    """The rendered site of a build that did not render it (its image was found unchanged):
    rendering is deterministic, and the context digest the image carries says it is the
    same site; a project edited since the build fails here rather than be misdescribed."""
    from shipit.errors import PreconditionError
    from shipit.inputs import FileIndex, scan_sources
    from shipit.render import render_site

    sources = scan_sources(
        settings.project_dir, index=FileIndex(settings.state_dir), max_size=settings.max_site_size
    )
    # The build rendered nginx.conf for what its base's nginx has (gzip_static or not), and
    # the context digest says which: the usual case first.
    for gzip_static in (True, False):
        site = render_site(
            settings.project_dir,
            built.base_image,
            built.build_id,
            sources=sources,
            gzip_static=gzip_static,
        )
        if site.context_digest == built.context_digest:
            return site
    raise PreconditionError(
        "the site changed while it was being shipped: its files are no longer those of "
        f"the image (context {site.context_digest[:12]}, the image's "
        f"{built.context_digest[:12]})",
        "run the ship again once the files stop changing",
    )
