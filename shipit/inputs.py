"""What a render reads, found and hashed without Jinja.

The build id is the digest of these inputs (the site, the templates, the base image and
shipit's version), and rendering is deterministic, so `shipit build` can find the image of
unchanged input by its build id without importing Jinja or rendering anything.

Hashing a big site on every build would cost seconds, so each file's hash is remembered in
the project's .shipit/ folder together with its stat (size, mtime, ctime, inode, device),
as git's index does: a file whose stat is unchanged is not read again. A stat can stay the
same across a write that lands within the file system's time granularity ("racy git"), so a
file changed shortly before the index was written is never trusted from it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat as stat_module
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from shipit import __version__
from shipit.errors import BuildError, SiteTooLargeError, TemplateError

BUILD_ID_LENGTH = 16
CHUNK_BYTES = 1024 * 1024
INDEX_FILE = "inputs-index.json"
INDEX_VERSION = 1
# A file whose mtime or ctime is this close to the index's writing (or later) may have been
# written again within the same time stamp: it is hashed again rather than trusted.
RACY_NANOSECONDS = 2_000_000_000
# errnos that mean the disk is full rather than the cache being merely unwritable.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SourceFile(NamedTuple):
    """One input file: where it is, and the size and hash of what it held when hashed.
    (A named tuple: a site has tens of thousands of them, and tuples are made fastest.)"""

    path: str
    size: int
    sha256: str


def digest_files(files: Mapping[str, bytes]) -> str:
    """The digest of in-memory files, the same as `digest_sources` of files on disk with the
    same names and bytes."""
    return digest_entries(
        (relative, len(data), hashlib.sha256(data).hexdigest()) for relative, data in files.items()
    )


def digest_entries(entries: Iterator[tuple[str, int, str]] | list[tuple[str, int, str]]) -> str:
    """One digest over (name, size, sha256) of every file, in name order."""
    digest = hashlib.sha256()
    for relative, size, sha256 in sorted(entries):
        digest.update(f"{relative}\0{size}\0{sha256}\n".encode())
    return digest.hexdigest()


def human_size(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class TornFileError(TemplateError):
    default_hint = "wait until whatever writes it has finished, then build again"


def torn(label: str) -> TornFileError:
    return TornFileError(f"{label} changed while shipit was reading it; nothing was shipped")


def _same_stat(before: os.stat_result, after: os.stat_result) -> bool:
    return (
        before.st_size == after.st_size
        and before.st_mtime_ns == after.st_mtime_ns
        and before.st_ctime_ns == after.st_ctime_ns
        and before.st_ino == after.st_ino
        and before.st_dev == after.st_dev
    )


def hash_file(path: str, label: str, expected: os.stat_result) -> str:
    """The sha256 of a file that must still have the stat it had when it was listed: a file
    written to while it is read would give the hash of neither version."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            if not _same_stat(expected, os.fstat(stream.fileno())):
                raise torn(label)
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
            if not _same_stat(expected, os.fstat(stream.fileno())):
                raise torn(label)
    except OSError as exc:
        raise TemplateError(
            f"cannot read {label}: {exc.strerror}", "fix its permissions or remove it"
        ) from exc
    return digest.hexdigest()


def _listed(root: str, label: str, project: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative, path, stat) of every file below root, following links that stay inside the
    project (a linked folder is served like a copied one)."""

    def visit(
        folder: str, prefix: str, ancestors: frozenset[str]
    ) -> Iterator[tuple[str, str, os.stat_result]]:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            relative = prefix + entry.name
            # The common case first, without a second stat: a regular file, not a link
            # (both answered by the directory listing's file type).
            if entry.is_file(follow_symlinks=False):
                yield relative, entry.path, entry.stat(follow_symlinks=False)
                continue
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if not (real == project or real.startswith(project + os.sep)):
                    # A link out of the project would bake a host file (a credential) into
                    # the image.
                    raise TemplateError(
                        f"{label}/{relative} links outside the project",
                        "copy the file into the project instead of linking to it",
                    )
            try:
                info = entry.stat()
            except OSError:
                info = None
            if info is not None and stat_module.S_ISDIR(info.st_mode):
                real = os.path.realpath(entry.path)
                if real in ancestors:
                    raise TemplateError(
                        f"{label}/{relative} links to a folder that contains it (a loop)",
                        "remove the link or point it at a folder outside its own path",
                    )
                yield from visit(entry.path, relative + "/", ancestors | {real})
                continue
            if info is None or not stat_module.S_ISREG(info.st_mode):
                # A FIFO or device would block or never end; only regular files are content.
                raise TemplateError(
                    f"{label}/{relative} is not a regular file (or its link is dangling)",
                    "remove it or replace it with a regular file",
                )
            yield relative, entry.path, info

    if not os.path.isdir(root):
        return
    yield from visit(root, "", frozenset({os.path.realpath(root)}))


class FileIndex:
    """Hashes of input files by their stat, kept in .shipit/ between builds."""

    def __init__(self, folder: Path | None, racy_nanoseconds: int = RACY_NANOSECONDS) -> None:
        self.path = folder / INDEX_FILE if folder is not None else None
        self._old: dict[str, list[object]] = {}
        self._new: dict[str, list[object]] = {}
        self._hashed = 0
        trusted_before = 0
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("version") == INDEX_VERSION and isinstance(data["entries"], dict):
                    self._old = data["entries"]
                    trusted_before = int(data["written_ns"]) - racy_nanoseconds
            except (OSError, ValueError, KeyError, TypeError):
                self._old = {}
        self._trusted_before = trusted_before

    @property
    def files_hashed(self) -> int:
        """How many files were read and hashed (not trusted from the index)."""
        return self._hashed

    def sha256(self, key: str, path: str, info: os.stat_result) -> str:
        old = self._old.get(key)
        if (
            old is not None
            and old[1] == info.st_mtime_ns
            and old[2] == info.st_ctime_ns
            and old[0] == info.st_size
            and old[3] == info.st_ino
            and old[4] == info.st_dev
            and info.st_mtime_ns < self._trusted_before
            and info.st_ctime_ns < self._trusted_before
        ):
            self._new[key] = old
            return str(old[5])
        stamp = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]
        digest = hash_file(path, key, info)
        self._new[key] = [*stamp, digest]
        self._hashed += 1
        return digest

    def save(self) -> None:
        """Writes the index when anything was hashed or is gone. Only a full disk is an
        error: an unwritable cache just means hashing again next time."""
        if self.path is None or (not self._hashed and self._new.keys() == self._old.keys()):
            return
        temporary = self.path.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        # The state folder ignores itself, so it never makes a user's tree dirty.
        ignore = self.path.parent / ".gitignore"
        made_ignore = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not ignore.exists():
                made_ignore = True
                ignore.write_text("*\n", encoding="utf-8")
            document = {
                "version": INDEX_VERSION,
                "written_ns": time.time_ns(),
                "entries": self._new,
            }
            temporary.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")
            temporary.replace(self.path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            if made_ignore:  # possibly empty, and then it would never be written again
                ignore.unlink(missing_ok=True)
            if exc.errno in _DISK_FULL:
                raise BuildError(
                    f"no space left on the disk of {self.path.parent} ({exc.strerror})",
                    "free some space on that disk and build again",
                ) from exc


def scan_sources(
    project_dir: Path,
    labels: tuple[str, ...] = ("templates", "site"),
    *,
    index: FileIndex | None = None,
    max_size: int | None = None,
) -> dict[str, SourceFile]:
    """Every input file as "label/relative" -> SourceFile. The whole size is checked against
    `max_size` from the listing alone, before any file is read."""
    project = os.path.realpath(project_dir)
    listed = [
        (f"{label}/{relative}", path, info)
        for label in labels
        for relative, path, info in _listed(os.path.join(project_dir, label), label, project)
    ]
    if max_size is not None:
        total = sum(info.st_size for _, _, info in listed)
        if total > max_size:
            raise SiteTooLargeError(
                f"the site is {human_size(total)}, over the limit of {human_size(max_size)} "
                "(setting max_site_size)",
                "make the site smaller, or raise the limit with SHIPIT_MAX_SITE_SIZE or "
                "max_site_size in shipit.toml",
            )
    index = index or FileIndex(None)
    return {
        key: SourceFile(path, info.st_size, index.sha256(key, path, info))
        for key, path, info in listed
    }


def source_digest(sources: Mapping[str, SourceFile], base_image: str) -> str:
    """What the build id is derived from: every input of the rendered context."""
    entries = [(key, source.size, source.sha256) for key, source in sources.items()]
    for name, value in (("\0base_image", base_image), ("\0shipit", __version__)):
        data = value.encode()
        entries.append((name, len(data), hashlib.sha256(data).hexdigest()))
    return digest_entries(entries)


def build_id_of(
    project_dir: Path,
    base_image: str,
    *,
    index: FileIndex | None = None,
    max_size: int | None = None,
) -> str:
    sources = scan_sources(project_dir, index=index, max_size=max_size)
    return build_id_from(sources, base_image)


def build_id_from(sources: Mapping[str, SourceFile], base_image: str) -> str:
    return source_digest(sources, base_image)[:BUILD_ID_LENGTH]
