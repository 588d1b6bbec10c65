"""Every file of the site layer, with where the image holds it and its checksums, for the SBOM.

The rendered site (render.RenderedSite) knows every name and the sha256 of every file
already (a page's bytes are in memory, a static file's hash is the input scan's). SPDX 2.3
also wants each file's SHA-1, which only reading the file gives: a static file is read once
more here, through the same check that it still holds what was hashed (ContextFiles.chunks),
so the SBOM never names bytes the layer does not hold.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipit.assemble import instructions_of

if TYPE_CHECKING:
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


def site_files(site: RenderedSite) -> Iterator[SiteFile]:
    """The files the site layer holds, in the context's path order."""
    from shipit.render import SERVED, ContextFiles

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
        for chunk in ContextFiles.chunks(name, entry):
            sha1.update(chunk)
        yield SiteFile(path, entry.size, entry.sha256, sha1.hexdigest())
