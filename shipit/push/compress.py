"""The gzip of a layer that shipit uploads itself: deterministic, in blocks, on every core.

The input is cut into BLOCK-sized blocks, whatever sizes its reads return. Each block is
deflated on its own with the previous block's last 32 KiB as its dictionary (as pigz does,
so the cut costs almost no size), and the blocks' deflate streams join into one gzip member
without a name or a time. Equal input therefore gives equal bytes whatever the number of
workers, and on every machine: the layers' blobs name the image's manifest digest, which a
rebuild of the same commit elsewhere must find again.

So the deflater is CPython's zlib, whose deflate is portable C without code paths chosen by
the CPU at run time. ISA-L and zlib-ng are several times faster, but pick SIMD code at run
time, and nothing promises that two code paths choose the same matches (ISA-L is reported to
give other bytes on CPUs without SSE4.2, where it runs plain C). zlib's output can still
differ between its versions and forks (a distribution's zlib-ng-compat, a patched zlib):
BLOB_FORMAT names its version and a fingerprint of its output, and a digest learned under
another format is not trusted.

A block that does not shrink (images, fonts, archives: most of a big site's bytes) is stored
rather than deflated: zlib spends as long on such a block as on text and saves nothing.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

BLOCK = 1 << 20
_WINDOW = 32 * 1024
# A gzip member header without a name or a time, so equal input gives equal bytes.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# zlib's level 1, measured on this project's machine (2 cores, 1 MiB blocks): the 137 MB Nginx
# base layer at 168 MB/s to 43.9 % of its size (level 4: 132 MB/s, 41.4 %; level 6: 62 MB/s,
# 40.5 %). ISA-L's level 1, which shipit used before, made 45.1 % of it at 773 MB/s.
ZLIB_LEVEL = 1
# A block is stored when none of these samples (evenly spread) deflates below STORE_ABOVE of
# its size. The samples cost 1/16 of deflating the block; a block of random bytes costs as much
# to deflate at level 1 as one of text and comes out larger. Measured as above: 1 GB of random
# bytes at 1,330 MB/s (deflated: 116 MB/s; ISA-L: 1,250 MB/s), 300 MB of half text, half random
# bytes at 540 MB/s (deflated: 179 MB/s; ISA-L: 1,010 MB/s), both to the same size as deflated.
_SAMPLES = 4
_SAMPLE_BYTES = 16 * 1024
STORE_ABOVE = 0.98
_STORED_MAX = 0xFFFF  # the most one stored deflate block holds


@dataclass(frozen=True)
class Compressor:
    """zlib at one level: what makes a layer's blob, and names its format."""

    version: str = zlib.ZLIB_RUNTIME_VERSION
    level: int = ZLIB_LEVEL

    @property
    def format(self) -> str:
        """Part of every digest learned: another zlib, level, block size or storing rule may
        give other blobs. The fingerprint tells apart zlibs that report the same version but
        deflate differently (a fork, a patch)."""
        rule = f"store{round(STORE_ABOVE * 100)}x{_SAMPLES}x{_SAMPLE_BYTES}"
        return f"gzip-zlib-{self.version}-{self.level}-{BLOCK}-{rule}-{self.fingerprint}"

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.level)

    def deflate(self, block: bytes, dictionary: bytes, last: bool) -> bytes:
        if len(block) == BLOCK and not self._shrinks(block):
            return _stored(block, last)
        if dictionary:
            deflater = zlib.compressobj(self.level, zlib.DEFLATED, -15, zdict=dictionary)
        else:
            deflater = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        # A sync flush ends the block on a byte boundary without ending the stream, so the
        # blocks' deflate streams join into one.
        return deflater.compress(block) + deflater.flush(
            zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
        )

    def _shrinks(self, block: bytes) -> bool:
        step = len(block) // _SAMPLES
        for start in range(0, step * _SAMPLES, step):
            sample = block[start : start + _SAMPLE_BYTES]
            deflater = zlib.compressobj(self.level, zlib.DEFLATED, -15)
            size = len(deflater.compress(sample)) + len(deflater.flush())
            if size < len(sample) * STORE_ABOVE:
                return True
        return False


@functools.cache
def _fingerprint(level: int) -> str:
    """The digest of this zlib's deflate of a fixed input, which exercises its matching."""
    probe = b"".join(
        hashlib.sha256(b"%d" % (number % 397)).hexdigest().encode()[: 1 + number % 31]
        for number in range(6000)
    )
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
    return hashlib.sha256(deflater.compress(probe) + deflater.flush()).hexdigest()[:12]


def _stored(block: bytes, last: bool) -> bytes:
    """The block as stored deflate blocks: on a byte boundary as a sync flush leaves the
    stream, each a header byte (final or not), its length and the length's complement."""
    pieces: list[bytes | memoryview] = []
    view = memoryview(block)
    for start in range(0, len(block), _STORED_MAX):
        piece = view[start : start + _STORED_MAX]
        final = last and start + _STORED_MAX >= len(block)
        pieces += (struct.pack("<BHH", final, len(piece), len(piece) ^ 0xFFFF), piece)
    return b"".join(pieces)


COMPRESSOR = Compressor()
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
        crc = zlib.crc32(block, crc)
        size += len(block)
        held = block
    in_flight.append(pool.submit(compressor.deflate, held or b"", previous[-_WINDOW:], True))
    while in_flight:
        yield in_flight.popleft().result()
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def read_blocks(source: IO[bytes]) -> Iterator[bytes]:
    """BLOCK-sized pieces of a file (the last one shorter), whatever its reads return."""
    return blocks_of(iter(functools.partial(source.read, BLOCK), b""))


def blocks_of(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """BLOCK-sized pieces of the pieces' concatenation (the last one shorter), whatever their
    sizes: what gzip_blocks takes."""
    pending = bytearray()
    for piece in pieces:
        if not pending and len(piece) == BLOCK:
            yield piece  # the usual read of a whole block, not copied
            continue
        view = memoryview(piece)
        while view:
            taken = view[: BLOCK - len(pending)]
            pending += taken
            view = view[len(taken) :]
            if len(pending) == BLOCK:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)
