"""The gzip of a layer that shipit uploads itself: deterministic, in blocks, on every core.

The input is cut into BLOCK-sized blocks, whatever sizes its reads return. Each block is
deflated on its own with the previous block's last 32 KiB as its dictionary (as pigz does,
so the cut costs almost no size), and the blocks' deflate streams join into one gzip member
without a name or a time. Equal input therefore gives equal bytes whatever the number of
workers, for one library at one version and level on one kind of machine: the libraries pick
their SIMD code at run time, and nothing promises that two code paths choose the same
matches. BLOB_FORMAT names all of that; a digest learned under another format is not trusted.

The compressor is ISA-L (`isal`), several times faster than zlib at a few per cent more size,
which matters because every new layer is compressed before its upload. Where its wheel cannot
be installed, zlib (CPython's own) does the same job at level 4, under its own format.
"""

from __future__ import annotations

import os
import platform
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Protocol

BLOCK = 1 << 20
_WINDOW = 32 * 1024
# A gzip member header without a name or a time, so equal input gives equal bytes.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class _Deflater(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int, /) -> bytes: ...


@dataclass(frozen=True)
class Compressor:
    """One deflate library at one level: what makes a layer's blob, and names its format."""

    library: str
    version: str
    level: int
    compressobj: Callable[..., _Deflater]
    crc32: Callable[[bytes, int], int]

    @property
    def format(self) -> str:
        """Part of every digest learned: another library, version, level, block size or
        machine may give other blobs."""
        machine = platform.machine().lower() or "unknown"
        return f"gzip-{self.library}-{self.version}-{self.level}-{BLOCK}-{machine}"

    def deflate(self, block: bytes, dictionary: bytes, last: bool) -> bytes:
        if dictionary:
            deflater = self.compressobj(self.level, zlib.DEFLATED, -15, zdict=dictionary)
        else:
            deflater = self.compressobj(self.level, zlib.DEFLATED, -15)
        # A sync flush ends the block on a byte boundary without ending the stream, so the
        # blocks' deflate streams join into one.
        return deflater.compress(block) + deflater.flush(
            zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
        )


# zlib's level 4 is within 3 % of gzip -6's size on an Nginx base layer at half its CPU time.
ZLIB_LEVEL = 4
# ISA-L's level 1 (of 0-3), on the 132 MB Nginx base layer: 5.5x zlib-4's speed for 9 % more
# bytes (a site's layer: 3 %); level 3 saves 3 % of that size for 1.7x the time. A cold ship's
# push waits for the compression, and the extra bytes cost less than the time saved.
ISAL_LEVEL = 1


def zlib_compressor() -> Compressor:
    return Compressor("zlib", zlib.ZLIB_RUNTIME_VERSION, ZLIB_LEVEL, zlib.compressobj, zlib.crc32)


def choose_compressor() -> Compressor:
    """ISA-L when it imports (a platform with its wheel), else CPython's zlib."""
    try:
        import isal
        from isal import isal_zlib
    except ImportError:
        return zlib_compressor()
    return Compressor("isal", isal.__version__, ISAL_LEVEL, isal_zlib.compressobj, isal_zlib.crc32)


COMPRESSOR = choose_compressor()
BLOB_FORMAT = COMPRESSOR.format


def gzip_blocks(
    blocks: Iterable[bytes], pool: ThreadPoolExecutor, compressor: Compressor = COMPRESSOR
) -> Iterator[bytes]:
    """One gzip member of the blocks' concatenation, the blocks compressed side by side.
    Every block but the last must be BLOCK bytes long for the output to be deterministic
    (read_blocks makes them so)."""
    yield _GZIP_HEADER
    in_flight: deque[Future[bytes]] = deque()
    limit = 2 * (os.cpu_count() or 1)  # blocks in flight: what bounds the memory
    crc = 0
    size = 0
    previous = b""
    held: bytes | None = None
    for block in blocks:
        if held is not None:
            in_flight.append(pool.submit(compressor.deflate, held, previous[-_WINDOW:], False))
            previous = held
            while len(in_flight) > limit:
                yield in_flight.popleft().result()
        crc = compressor.crc32(block, crc)
        size += len(block)
        held = block
    in_flight.append(pool.submit(compressor.deflate, held or b"", previous[-_WINDOW:], True))
    while in_flight:
        yield in_flight.popleft().result()
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def read_blocks(source: IO[bytes]) -> Iterator[bytes]:
    """BLOCK-sized pieces of a file (the last one shorter), whatever its reads return."""
    pending = bytearray()
    while True:
        piece = source.read(BLOCK - len(pending))
        if not piece:
            break
        if not pending and len(piece) == BLOCK:
            yield piece  # the usual read of a whole block, not copied
            continue
        pending += piece
        if len(pending) == BLOCK:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)
