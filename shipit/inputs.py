"""What a render reads, found and hashed without Jinja.

The build id is the digest of these inputs (the site, the templates, the base image and
shipit's version), and rendering is deterministic, so `shipit build` can find the image of
unchanged input by its build id without importing Jinja or rendering anything.

Hashing a big site on every build would cost seconds, so each file's hash is remembered in
the project's .shipit/ folder together with its stat (size, mtime, ctime, inode, device),
as git's index does: a file whose stat is unchanged is not read again. A stat can stay the
same across a write that lands within the file system's time granularity ("racy git"), so a
file changed shortly before the index was written is never trusted from it.

Memory does not grow with the number of files: the listing is walked in one fixed order
(path components compared one by one, as `path_order` gives), the old index is read along
with it in the same order, and what the walk found is written to an anonymous temporary
file that later stages read back in pieces.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import operator
import os
import stat as stat_module
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from shipit import __version__
from shipit.errors import BuildError, SiteTooLargeError, TemplateError
from shipit.state import make_state_dir

BUILD_ID_LENGTH = 16
SHA256_HEX_LENGTH = 64
CHUNK_BYTES = 1024 * 1024
INDEX_FILE = "inputs-index"
INDEX_HEADER = b"shipit-inputs 2"
# A file whose mtime or ctime is this close to the index's writing (or later) may have been
# written again within the same time stamp: it is hashed again rather than trusted.
RACY_NANOSECONDS = 2_000_000_000
LABELS = ("site", "templates")  # in path order
# errnos that mean the disk is full rather than the cache being merely unwritable.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SourceFile(NamedTuple):
    """One input file: where it is, and the size and hash of what it held when hashed."""

    path: str
    size: int
    sha256: str
    # Its stat when listed, and whether that stat alone shows any later write: true when
    # the file was last changed well before the listing (see `Sources.items`).
    stamp: bytes = b""
    settled: bool = False


def path_order(name: str) -> list[str]:
    """The one order of files everywhere (listing, index, digests, the tar): a folder's
    files come together, right where the folder's name sorts among its siblings."""
    return name.split("/")


def digest_entries(entries: Iterable[tuple[str, int, str]]) -> str:
    """One digest over (name, size, sha256) of every file, given in path order."""
    digest = hashlib.sha256()
    for relative, size, sha256 in entries:
        digest.update(f"{relative}\0{size}\0{sha256}\n".encode("utf-8", "surrogateescape"))
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


def hash_file(path: str, label: str, expected: os.stat_result | bytes) -> str:
    """The sha256 of a file that must still have the stat it had when it was listed (a
    stat_result or its stamp): a file written to while it is read would give the hash of
    neither version."""
    if isinstance(expected, os.stat_result):
        expected = stamp_of(expected)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            # One check after the reading covers a write before it too: any write moves
            # the ctime (and a replaced file has another inode).
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
            if stamp_of(os.fstat(stream.fileno())) != expected:
                raise torn(label)
    except OSError as exc:
        raise TemplateError(
            f"cannot read {label}: {exc.strerror}", "fix its permissions or remove it"
        ) from exc
    return digest.hexdigest()


def _listed(project_dir: str) -> Iterator[tuple[str, os.stat_result]]:
    """("label/relative", stat) of every input file in path order, following links that stay
    inside the project (a linked folder is served like a copied one). Depth first with a
    stack of folder listings rather than nested generators, which cost per file and level.
    Each folder is listed through an open descriptor of it, so a file's stat looks up one
    name rather than its whole path."""
    project = os.path.realpath(project_dir)
    for label in LABELS:
        root = os.path.join(project_dir, label)
        if not os.path.isdir(root):
            continue
        stack = [_Folder.open(root, label + "/", frozenset({os.path.realpath(root)}))]
        try:
            while stack:
                folder = stack[-1]
                for entry in folder.entries:
                    # The common case first, without a second stat: a regular file, not a
                    # link (both answered by the directory listing's file type).
                    if entry.is_file(follow_symlinks=False):
                        yield folder.prefix + entry.name, entry.stat(follow_symlinks=False)
                        continue
                    relative = folder.prefix + entry.name
                    path = os.path.join(folder.path, entry.name)
                    if entry.is_symlink():
                        real = os.path.realpath(path)
                        if not (real == project or real.startswith(project + os.sep)):
                            # A link out of the project would bake a host file (a
                            # credential) into the image.
                            raise TemplateError(
                                f"{relative} links outside the project",
                                "copy the file into the project instead of linking to it",
                            )
                    try:
                        info: os.stat_result | None = entry.stat()
                    except OSError:
                        info = None
                    if info is not None and stat_module.S_ISDIR(info.st_mode):
                        real = os.path.realpath(path)
                        if real in folder.ancestors:
                            raise TemplateError(
                                f"{relative} links to a folder that contains it (a loop)",
                                "remove the link or point it at a folder outside its own path",
                            )
                        stack.append(_Folder.open(path, relative + "/", folder.ancestors | {real}))
                        break  # into the folder; this listing goes on after it
                    if info is None or not stat_module.S_ISREG(info.st_mode):
                        # A FIFO or device would block or never end; only regular files count.
                        raise TemplateError(
                            f"{relative} is not a regular file (or its link is dangling)",
                            "remove it or replace it with a regular file",
                        )
                    yield relative, info
                else:
                    stack.pop().close()
        finally:
            for folder in stack:
                folder.close()


class _Folder:
    """A folder being listed: its entries in name order, read through a descriptor that
    stays open until the last entry's stat."""

    def __init__(self, path: str, prefix: str, ancestors: frozenset[str], descriptor: int) -> None:
        self.path = path
        self.prefix = prefix
        self.ancestors = ancestors
        self._descriptor = descriptor
        with os.scandir(descriptor) as listing:
            self.entries = iter(sorted(listing, key=_NAME))

    @classmethod
    def open(cls, path: str, prefix: str, ancestors: frozenset[str]) -> _Folder:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return cls(path, prefix, ancestors, descriptor)
        except BaseException:
            os.close(descriptor)
            raise

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1


_NAME = operator.attrgetter("name")


# Records: three NUL-terminated fields per file, the key (a file name holds any byte but NUL),
# its stat "size mtime_ns ctime_ns inode device" and its sha256 (hex).
_SEPARATOR = b"\0"


class _Record(NamedTuple):
    key: bytes
    stamp: bytes
    sha256: bytes


def stamp_of(info: os.stat_result) -> bytes:
    return b"%d %d %d %d %d" % (
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_ino,
        info.st_dev,
    )


def _read_records(stream: IO[bytes], offset: int = 0) -> Iterator[_Record]:
    """The records of a file from `offset`, read by position (os.pread), so that several
    readers of one file never move each other's place. ValueError when damaged."""
    descriptor = stream.fileno()
    rest = b""
    while block := os.pread(descriptor, CHUNK_BYTES, offset):
        offset += len(block)
        fields = (rest + block).split(_SEPARATOR)
        rest = fields.pop()
        whole = len(fields) - len(fields) % 3
        for index in range(0, whole, 3):
            yield _Record(fields[index], fields[index + 1], fields[index + 2])
        if whole < len(fields):
            rest = _SEPARATOR.join([*fields[whole:], rest])
    if rest:
        raise ValueError("a record is cut short")


class Sources:
    """Every input file as ("label/relative", SourceFile), in path order, kept in an
    anonymous temporary file rather than in memory."""

    def __init__(
        self,
        project_dir: Path,
        records: IO[bytes],
        count: int,
        digest: str,
        listed_ns: int,
        racy_nanoseconds: int = RACY_NANOSECONDS,
    ) -> None:
        self.project_dir = str(project_dir)
        self._records = records
        self.count = count
        # The digest over (key, size, sha256) of every file: the build id is made from it.
        self.digest = digest
        self.listed_ns = listed_ns
        self.racy_nanoseconds = racy_nanoseconds

    def items(self, prefix: str = "") -> Iterator[tuple[str, SourceFile]]:
        """Files whose key starts with `prefix` (a folder, ending in "/").

        A file is `settled` when its mtime and ctime lie more than the racy window (2 s)
        before the listing: any later write then moves its ctime to a later time stamp (the kernel
        sets it on every write, and no call sets it back), so an unchanged stat proves
        unchanged bytes. A file changed just before the listing could be written again
        within the same time stamp: its bytes must be hashed again to be trusted."""
        wanted = prefix.encode("utf-8", "surrogateescape")
        settled_before = self.listed_ns - self.racy_nanoseconds
        for record in _read_records(self._records):
            if record.key.startswith(wanted):
                key = record.key.decode("utf-8", "surrogateescape")
                size, mtime, ctime, _, _ = (int(field) for field in record.stamp.split(b" "))
                yield (
                    key,
                    SourceFile(
                        os.path.join(self.project_dir, key),
                        size,
                        record.sha256.decode(),
                        record.stamp,
                        mtime < settled_before and ctime < settled_before,
                    ),
                )

    def __len__(self) -> int:
        return self.count

    def copy_to(self, stream: IO[bytes]) -> None:
        offset = 0
        while block := os.pread(self._records.fileno(), CHUNK_BYTES, offset):
            stream.write(block)
            offset += len(block)


class _OldIndex:
    """The index of the last build, read in path order alongside the listing.

    Read in blocks of a fixed size, so memory does not grow with the number of files. A
    no-change build asks for each file in the order the index holds them, with the stat it
    has: that is a comparison of bytes at the current place, with no record split apart."""

    def __init__(self, path: Path | None, racy_nanoseconds: int) -> None:
        self.trusted_before = 0
        self.count = 0
        self._stream: IO[bytes] | None = None
        self._offset = 0  # where the next block starts in the file
        self._buffer = b""
        self._place = 0  # where the next record starts in the buffer
        if path is None:
            return
        try:
            stream = path.open("rb")
        except OSError:
            return
        try:
            header = stream.readline()
            fields = header.split()
            if fields[:2] != INDEX_HEADER.split() or len(fields) != 3:
                raise ValueError("not an index of this shipit")
            self.trusted_before = int(fields[2]) - racy_nanoseconds
        except (OSError, ValueError):
            stream.close()
            return
        self._stream = stream
        self._offset = len(header)

    def _fill(self) -> bool:
        """Appends the next block to what is left of the buffer; False at the end."""
        if self._stream is None:
            return False
        try:
            block = os.pread(self._stream.fileno(), CHUNK_BYTES, self._offset)
        except OSError:
            block = b""
        if not block:
            self._close()
            return False
        self._offset += len(block)
        self._buffer = self._buffer[self._place :] + block
        self._place = 0
        return True

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _peek(self) -> tuple[bytes, bytes, bytes, int] | None:
        """(key, stamp, sha256, where it ends) of the next record, None at the end or at
        damage (a record cut short: nothing after the damage is trusted)."""
        while True:
            buffer, place = self._buffer, self._place
            key_end = buffer.find(_SEPARATOR, place)
            stamp_end = buffer.find(_SEPARATOR, key_end + 1) if key_end >= 0 else -1
            sha_end = buffer.find(_SEPARATOR, stamp_end + 1) if stamp_end >= 0 else -1
            if sha_end >= 0:
                return (
                    buffer[place:key_end],
                    buffer[key_end + 1 : stamp_end],
                    buffer[stamp_end + 1 : sha_end],
                    sha_end + 1,
                )
            if not self._fill():
                self._buffer, self._place = b"", 0
                return None

    def hash_of(self, key: bytes, stamp: bytes) -> bytes | None:
        """The sha256 the index holds for `key` when its stamp there is `stamp`, else None;
        keys must be asked for in path order."""
        expected = b"%s\0%s\0" % (key, stamp)
        end = self._place + len(expected) + SHA256_HEX_LENGTH
        if end >= len(self._buffer):
            self._fill()
            end = self._place + len(expected) + SHA256_HEX_LENGTH
        buffer = self._buffer
        # The common case: the next record is this file with the same stamp.
        if (
            buffer.startswith(expected, self._place)
            and buffer[end : end + 1] == _SEPARATOR
            and buffer.find(_SEPARATOR, end - SHA256_HEX_LENGTH, end) < 0
        ):
            self.count += 1
            sha256 = buffer[end - SHA256_HEX_LENGTH : end]
            self._place = end + 1
            return sha256
        order = key.split(b"/")
        while (record := self._peek()) is not None:
            found, found_stamp, sha256, record_end = record
            if found != key and found.split(b"/") < order:  # a file now gone
                self.count += 1
                self._place = record_end
                continue
            if found == key:
                self.count += 1
                self._place = record_end
                return sha256 if found_stamp == stamp else None
            return None
        return None

    def finish(self) -> int:
        """How many records the old index held."""
        while (record := self._peek()) is not None:
            self.count += 1
            self._place = record[3]
        self._close()
        return self.count


class FileIndex:
    """Hashes of input files by their stat, kept in .shipit/ between builds."""

    def __init__(self, folder: Path | None, racy_nanoseconds: int = RACY_NANOSECONDS) -> None:
        self.path = folder / INDEX_FILE if folder is not None else None
        self.racy_nanoseconds = racy_nanoseconds
        self._hashed = 0
        self._changed = False
        self._sources: Sources | None = None

    @property
    def files_hashed(self) -> int:
        """How many files were read and hashed (not trusted from the index)."""
        return self._hashed

    def scan(self, project_dir: Path, max_size: int | None = None) -> Sources:
        """Lists every input file into a temporary file, with its hash from the old index
        when its stat is unchanged and not racy; checks the whole size; and only then, when
        some file had no trusted hash, reads those files in a second pass over the list.
        A no-change build walks the site once and reads no file."""
        listed_ns = time.time_ns()
        # Anonymous, so nothing is ever left behind; the records live as long as the Sources.
        listing = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            old = _OldIndex(self.path, self.racy_nanoseconds)
            trusted_before = old.trusted_before
            digest = hashlib.sha256()
            count, total, missing = 0, 0, 0
            for name, info in _listed(str(project_dir)):
                key = name.encode("utf-8", "surrogateescape")
                stamp = stamp_of(info)
                sha256 = old.hash_of(key, stamp)
                if (
                    sha256 is not None
                    # Changed too close to the old index's writing to trust its stat?
                    and info.st_mtime_ns < trusted_before
                    and info.st_ctime_ns < trusted_before
                ):
                    digest.update(b"%s\0%d\0%s\n" % (key, info.st_size, sha256))
                else:
                    sha256 = b""
                    missing += 1
                listing.write(b"%s\0%s\0%s\0" % (key, stamp, sha256))
                total += info.st_size
                count += 1
            listing.flush()
            if max_size is not None and total > max_size:
                raise _too_large(total, max_size)
            if missing:
                records = tempfile.TemporaryFile()  # noqa: SIM115
                with listing:
                    hexdigest = self._hash(project_dir, listing, records)
            else:
                records, hexdigest = listing, digest.hexdigest()
        except OSError as exc:
            listing.close()
            if exc.errno in _DISK_FULL:
                raise _disk_full(Path(tempfile.gettempdir()), exc) from exc
            raise
        except BaseException:
            listing.close()
            raise
        self._changed = bool(missing) or old.finish() != count
        self._sources = Sources(
            project_dir, records, count, hexdigest, listed_ns, self.racy_nanoseconds
        )
        return self._sources

    def _hash(self, project_dir: Path, listing: IO[bytes], records: IO[bytes]) -> str:
        """The records with every missing hash filled in, by reading those files."""
        digest = hashlib.sha256()
        try:
            for key, stamp, known in _read_records(listing):
                sha256 = known
                if not sha256:
                    name = key.decode("utf-8", "surrogateescape")
                    sha256 = hash_file(os.path.join(project_dir, name), name, stamp).encode()
                    self._hashed += 1
                records.write(b"%s\0%s\0%s\0" % (key, stamp, sha256))
                digest.update(b"%s\0%s\0%s\n" % (key, stamp[: stamp.index(b" ")], sha256))
            records.flush()
        except BaseException:
            records.close()
            raise
        return digest.hexdigest()

    def save(self) -> None:
        """Writes the index when anything was hashed or is gone. Only a full disk is an
        error: an unwritable cache just means hashing again next time."""
        if self.path is None or self._sources is None or not self._changed:
            return
        temporary = self.path.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        try:
            make_state_dir(self.path.parent)
            with temporary.open("wb") as stream:
                stream.write(INDEX_HEADER + b" %d\n" % time.time_ns())
                self._sources.copy_to(stream)
            temporary.replace(self.path)
        except BaseException as exc:
            # An interrupt too: no half-written index stays in the state folder.
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            if not isinstance(exc, OSError):
                raise
            if exc.errno in _DISK_FULL:
                raise _disk_full(self.path.parent, exc) from exc


def _disk_full(where: Path, exc: OSError) -> BuildError:
    return BuildError(
        f"no space left on the disk of {where} ({exc.strerror})",
        "free some space on that disk and build again",
    )


def scan_sources(
    project_dir: Path,
    *,
    index: FileIndex | None = None,
    max_size: int | None = None,
) -> Sources:
    """Every input file (templates/ and site/). The whole size is checked against
    `max_size` from a listing alone, before any file is read."""
    return (index or FileIndex(None)).scan(project_dir, max_size)


def _too_large(total: int, max_size: int) -> SiteTooLargeError:
    return SiteTooLargeError(
        f"the site is {human_size(total)}, over the limit of {human_size(max_size)} "
        "(setting max_site_size)",
        "make the site smaller, or raise the limit with SHIPIT_MAX_SITE_SIZE or "
        "max_site_size in shipit.toml",
    )


def source_digest(sources: Sources, base_image: str) -> str:
    """What the build id is derived from: every input of the rendered context."""
    digest = hashlib.sha256(sources.digest.encode())
    for name, value in (("base_image", base_image), ("shipit", __version__)):
        digest.update(f"\0{name}\0{value}".encode())
    return digest.hexdigest()


def build_id_from(sources: Sources, base_image: str) -> str:
    return source_digest(sources, base_image)[:BUILD_ID_LENGTH]
