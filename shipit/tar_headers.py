"""Every tar header shipit writes: the build context's files, the site layer's folders and
files, and the members of the image archive the engine loads.

Each member is owned by uid 0 at a time that depends only on the input, in pax format only
where ustar cannot hold its name or size: the same input gives the same bytes, and so the same
layer digest, on every machine.
"""

from __future__ import annotations

import tarfile

# 2001-01-01: folders and the image archive's members; a file's own time comes from its content.
FIXED_MTIME = 978_307_200


def file_header(name: str, size: int, mtime: int, *, owner: str = "root") -> bytes:
    """A regular file's header, mode 0644. `owner` is the user and group name recorded
    (uid and gid are 0 either way; the image archive's members name none)."""
    encoded = name.encode("utf-8", "surrogateescape")
    if owner == "root" and len(encoded) <= _NAME_FIELD and encoded.isascii() and size < _LARGEST:
        # What tarfile writes for such a member (a plain ustar block), made 10x faster: a
        # site of 20,000 files spent a second in tarfile here.
        head = b"%s%s%011o\0%011o\0" % (
            encoded.ljust(_NAME_FIELD, b"\0"),
            _MODE_UID_GID,
            size,
            mtime,
        )
        checksum = sum(head) + _CHECKSUM_OF_REST
        return head + b"%06o\0 " % checksum + _HEADER_REST
    return _header(name, tarfile.REGTYPE, 0o644, size, mtime, owner)


def directory_header(name: str) -> bytes:
    """A folder's header (name ends with "/"), mode 0755, owned by root, at FIXED_MTIME."""
    return _header(name, tarfile.DIRTYPE, 0o755, 0, FIXED_MTIME, "root")


def _header(name: str, kind: bytes, mode: int, size: int, mtime: int, owner: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = owner
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_NAME_FIELD = 100
_LARGEST = 8**11  # a size or time that needs more than 11 octal digits needs pax
_MODE_UID_GID = b"0000644\0" + b"0000000\0" * 2
# After the checksum: type "0" (regular file), no link name, "ustar\0" "00", user and
# group "root", empty device numbers and prefix, padding to the 512-byte block.
_HEADER_REST = (
    tarfile.REGTYPE
    + b"\0" * 100
    + tarfile.POSIX_MAGIC
    + b"root".ljust(32, b"\0") * 2
    + b"\0" * (8 + 8 + 155)
).ljust(tarfile.BLOCKSIZE - 156, b"\0")
# The checksum counts its own field as eight spaces.
_CHECKSUM_OF_REST = sum(b" " * 8) + sum(_HEADER_REST)
