"""The OS packages an image holds, as its package manager recorded them: dpkg's status file
on a Debian (or Ubuntu) base, apk's installed database on Alpine.

Where the database comes from: the container the smoke test runs, through the engine
(`Engine.container_archive`, what `docker cp` reads). That is one small file (about 100 kB
for Debian's nginx) read in one request, where the base layer that holds it is tens of
megabytes to read and unpack; and it is the file of the very image that ran, whoever built
it (a `docker build` whose Dockerfile installs packages included). Kept in the user's cache
by the image's id (its config's digest, so the same id means the same files), so that an
image whose smoke pass is reused, which runs no container, still has its database.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from shipit.registries.ecr_cache import cache_directory, write_atomically

if TYPE_CHECKING:
    from shipit.engine import Engine

DPKG_STATUS = "/var/lib/dpkg/status"
APK_INSTALLED = "/lib/apk/db/installed"
# The package managers shipit reads, in the order it looks for their database.
DATABASES = (("dpkg", DPKG_STATUS), ("apk", APK_INSTALLED))
# More than any real database: a container that answers with more is not read whole.
MAX_DATABASE_BYTES = 64 * 1024 * 1024
# Databases kept in the cache: a few images of each of a few projects.
KEPT_DATABASES = 32
_SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")
_DEBIAN_MAJOR = re.compile(r"^(\d+)(?:\.|\+|$)")
_ALPINE_RELEASE = re.compile(r"^(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Package:
    """One installed package: `kind` is its purl type, "deb" or "apk"."""

    kind: str
    name: str
    version: str
    architecture: str
    source: str = ""  # the source package it was built from, when not its own name
    source_version: str = ""  # when not the package's own version
    license: str = ""  # as the database spells it (apk's `L:`); dpkg's status has none
    homepage: str = ""


@dataclass(frozen=True)
class PackageDatabase:
    """A package manager's database, as read from the image: `kind` is "dpkg" or "apk"."""

    kind: str
    content: bytes

    def packages(self) -> tuple[Package, ...]:
        text = self.content.decode("utf-8", "replace")
        found = dpkg_packages(text) if self.kind == "dpkg" else apk_packages(text)
        return tuple(sorted(found, key=lambda package: (package.name, package.architecture)))


def _paragraphs(text: str) -> Iterator[list[str]]:
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip():
            lines.append(line)
        elif lines:
            yield lines
            lines = []
    if lines:
        yield lines


def _dpkg_fields(lines: list[str]) -> dict[str, str]:
    """A paragraph's fields (RFC 822 style): continuation lines, which start with a space,
    belong to the field before them (only the first line of each is kept)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line[0] in " \t":
            continue
        name, separator, value = line.partition(":")
        if separator:
            fields[name.strip().lower()] = value.strip()
    return fields


def dpkg_packages(status: str) -> Iterator[Package]:
    """Every package dpkg's status file says is installed (status word "installed"; a
    package removed but not purged stays listed as "config-files")."""
    for lines in _paragraphs(status):
        fields = _dpkg_fields(lines)
        words = fields.get("status", "").split()
        if len(words) != 3 or words[2] != "installed" or not fields.get("package"):
            continue
        source, source_version = "", ""
        match = _SOURCE.match(fields.get("source", ""))
        if match:
            source, source_version = match.group(1), match.group(2) or ""
        yield Package(
            kind="deb",
            name=fields["package"],
            version=fields.get("version", ""),
            architecture=fields.get("architecture", ""),
            source=source,
            source_version=source_version,
            homepage=fields.get("homepage", ""),
        )


def apk_packages(installed: str) -> Iterator[Package]:
    """Every package of apk's installed database: one paragraph per package, each line a
    one-letter key, a colon and its value (P name, V version, A architecture, L license,
    o origin, the source package; U its project's URL)."""
    for lines in _paragraphs(installed):
        fields: dict[str, str] = {}
        for line in lines:
            key, separator, value = line.partition(":")
            if separator and len(key) == 1 and key not in fields:
                fields[key] = value.strip()
        if not fields.get("P"):
            continue
        origin = fields.get("o", "")
        yield Package(
            kind="apk",
            name=fields["P"],
            version=fields.get("V", ""),
            architecture=fields.get("A", ""),
            source=origin if origin != fields["P"] else "",
            license=fields.get("L", ""),
            homepage=fields.get("U", ""),
        )


def distribution(packages: tuple[Package, ...]) -> tuple[str, str]:
    """(namespace, distro) of the purls, read from the packages themselves, so that no
    second file is read: Debian's base-files version starts with its release (12.4+deb12u9
    is Debian 12), Ubuntu's names ubuntu, Alpine's alpine-release is its release."""
    by_name = {package.name: package for package in packages}
    if packages and packages[0].kind == "apk":
        release = by_name.get("alpine-release")
        match = _ALPINE_RELEASE.match(release.version) if release else None
        return "alpine", f"alpine-{match.group(1)}" if match else ""
    base_files = by_name.get("base-files")
    if base_files is not None and "ubuntu" in base_files.version:
        return "ubuntu", ""
    match = _DEBIAN_MAJOR.match(base_files.version) if base_files else None
    return "debian", f"debian-{match.group(1)}" if match else ""


def purl(package: Package, namespace: str, distro: str = "") -> str:
    """The package URL (github.com/package-url/purl-spec) of an OS package, as syft and
    trivy write them: pkg:deb/debian/NAME@VERSION?arch=...&distro=debian-12."""
    qualifiers = {"arch": package.architecture, "distro": distro}
    if package.source:
        qualifiers["upstream"] = package.source
    query = "&".join(
        f"{key}={quote(value, safe='')}" for key, value in sorted(qualifiers.items()) if value
    )
    version = f"@{quote(package.version, safe=':')}" if package.version else ""
    return f"pkg:{package.kind}/{namespace}/{quote(package.name, safe='')}{version}" + (
        f"?{query}" if query else ""
    )


def file_from_archive(archive: bytes, path: str) -> bytes | None:
    """The one regular file of the tar `docker cp` gives for `path`; None when it is not a
    regular file (a symlink is the link itself there) or is larger than any database."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            if member.isfile() and member.name == os.path.basename(path):
                if member.size > MAX_DATABASE_BYTES:
                    return None
                extracted = tar.extractfile(member)
                return extracted.read() if extracted is not None else None
    return None


def read_package_database(engine: Engine, container_id: str) -> PackageDatabase | None:
    """The package database of a container (running or stopped), or None when it holds
    none that shipit reads (a distroless or scratch base)."""
    for kind, path in DATABASES:
        archive = engine.container_archive(container_id, path)
        content = file_from_archive(archive, path) if archive is not None else None
        if content is not None:
            return PackageDatabase(kind, content)
    return None


class PackageCache:
    """Package databases by image id, in the user's cache folder (0600 files): a database
    is read from the image's own container, and the same id is the same files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_user(cls, environ: Mapping[str, str] | None = None) -> PackageCache:
        return cls(cache_directory(os.environ if environ is None else environ) / "packages")

    def _path(self, image_id: str) -> Path | None:
        hexdigits = image_id.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", hexdigits):
            return None
        return self.directory / hexdigits

    def get(self, image_id: str) -> PackageDatabase | None:
        path = self._path(image_id)
        try:
            raw = path.read_bytes() if path is not None else b""
        except OSError:
            return None
        kind, separator, content = raw.partition(b"\n")
        if not separator or kind.decode("ascii", "replace") not in dict(DATABASES):
            return None
        return PackageDatabase(kind.decode(), content)

    def put(self, image_id: str, database: PackageDatabase) -> None:
        """Best effort: a cache that cannot be written only means reading the container
        again next time."""
        path = self._path(image_id)
        if path is None:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(path, database.kind.encode() + b"\n" + database.content)
            kept = sorted(
                (each for each in self.directory.iterdir() if self._path(each.name) == each),
                key=lambda each: each.stat().st_mtime,
            )
            for stale in kept[:-KEPT_DATABASES]:
                stale.unlink(missing_ok=True)
        except OSError:
            pass


def package_database(
    engine: Engine, container_id: str, image_id: str, cache: PackageCache | None = None
) -> PackageDatabase | None:
    """The package database of image `image_id`, from the cache, else read from
    `container_id` (a container of that image; "" when none runs) and kept."""
    cache = cache or PackageCache.for_user()
    cached = cache.get(image_id)
    if cached is not None or not container_id:
        return cached
    database = read_package_database(engine, container_id)
    if database is not None:
        cache.put(image_id, database)
    return database
