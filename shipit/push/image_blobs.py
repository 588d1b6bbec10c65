"""One push's blobs of one image, made once and shared by every registry's thread: from the
blob store (push/blobs.py) when a push has made them before, else from one export of the image
from the engine, whose layers are compressed side by side while the uploads go on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

from shipit.digests import digest_of, sha256_digest, short_id
from shipit.errors import PushError
from shipit.labels import LABEL_BASE_DIGEST
from shipit.progress import Progress, quiet
from shipit.push.base_layers import BaseLayers, base_layers_of
from shipit.push.compress import BLOCK, read_blocks
from shipit.registries.manifest import Manifest

if TYPE_CHECKING:
    from shipit.engine import Engine
    from shipit.platforms import Platform
from shipit.push.blobs import Blob, BlobStore, compress_layer

# Blobs of an export kept in memory until its manifest says what they are: configs, manifests.
_SMALL_BLOB_BYTES = 4 << 20


def _image_manifest(data: bytes | None) -> Manifest | None:
    """`data` as an image manifest, None when it is none (an image config, nothing)."""
    if data is None:
        return None
    try:
        content = json.loads(data)
    except ValueError:
        return None
    if not isinstance(content, dict) or "layers" not in content or "schemaVersion" not in content:
        return None
    return Manifest(
        digest=sha256_digest(data),
        media_type=str(content.get("mediaType") or ""),
        content=content,
        raw=data,
    )


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks (the engine's export), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class ImageBlobs:
    """One push's blobs of one image, made once and shared by every registry's thread.

    A layer's digest comes from the store when a push has compressed it before; its bytes
    come from the store when kept, else from one export of the image from the engine, which
    compresses every layer side by side with the others' uploads still to come.
    """

    def __init__(
        self,
        engine: Engine,
        image_id: str,
        diff_ids: tuple[str, ...],
        store: BlobStore,
        stall_timeout: float,
        labels: Mapping[str, str] | None = None,
        progress: Progress = quiet,
    ) -> None:
        self.engine = engine
        # Name the base's manifest in its registry when the build read it there.
        self._labels = dict(labels or {})
        self._progress = progress
        self._base: BaseLayers | None = None
        self._base_decided = False
        self._base_lock = threading.Lock()
        # How long a registry may take none of an upload's bytes (engine_timeout).
        self.stall_timeout = stall_timeout
        self.image_id = image_id
        self.diff_ids = diff_ids
        self.store = store
        self._lock = threading.Lock()
        # The layers compressed by this push's export, and what the store said of the others.
        self._made: dict[str, Blob] = {}
        self._stored: dict[str, Blob | None] = {}
        self._config: bytes | None = None
        self._exported = False
        self._temporary: Path | None = None
        self._temporary_lock: int | None = None
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="gzip")
        self._closed = False
        self._preparing: threading.Thread | None = None

    def prepare(self) -> None:
        """Starts the export in the background when the store lacks a layer, so that a ship
        compresses the image while it runs and smoke-tests it: the engine takes most of a
        second to write a `docker save` before its first byte. The push waits for it."""
        if all(self.known(diff_id) is not None for diff_id in self.diff_ids):
            return
        self._preparing = threading.Thread(target=self._prepare, name="export", daemon=True)
        self._preparing.start()

    def _prepare(self) -> None:
        # A failed export is tried again, and its error reported, by the push.
        base = self.base_layers()
        if all(
            self.known(diff_id) is not None or (base is not None and diff_id in base.blobs)
            for diff_id in self.diff_ids
        ):
            return
        with self._lock, contextlib.suppress(Exception):
            self._export()

    def _platform(self) -> Platform:
        from shipit.base_image import platform_of

        image = self.engine.image(self.image_id)
        if image is None:
            raise PushError(
                f"image {short_id(self.image_id)} is gone from the engine",
                "build it again (`shipit build`) and push again",
            )
        return platform_of(image)

    def base_layers(self) -> BaseLayers | None:
        """The base's layers in its registry, read once (push/base_layers.py)."""
        with self._base_lock:
            if not self._base_decided:
                self._base_decided = True
                if self._labels.get(LABEL_BASE_DIGEST):
                    self._base = base_layers_of(
                        self._labels,
                        self.diff_ids,
                        self.engine.registry_rules,
                        self._progress,
                        self._platform,
                    )
            return self._base

    def known(self, diff_id: str) -> Blob | None:
        """The layer's blob as far as it is known without compressing anything: the one made
        by this push's export, else what the store says (looked up once per push, so every
        registry's thread is given the same blob)."""
        with self._lock:
            made = self._made.get(diff_id)
            if made is not None:
                return made
            if diff_id not in self._stored:
                self._stored[diff_id] = self.store.layer(diff_id)
            return self._stored[diff_id]

    def layer(self, diff_id: str) -> Blob:
        """The layer's blob with a file of its bytes, compressing it if need be."""
        known = self.known(diff_id)
        if known is not None and known.path is not None:
            return known
        with self._lock:
            if diff_id not in self._made:
                self._export()
            made = self._made.get(diff_id)
        if made is None:
            raise PushError(
                f"the engine's export of image {short_id(self.image_id)} "
                f"has no layer {diff_id[:19]}",
                "rebuild the image (`shipit build`) and push again",
            )
        return made

    def from_store(self, diff_id: str, blob: Blob) -> bool:
        """Whether `blob` is the layer's file as the store kept it before this push."""
        with self._lock:
            return diff_id not in self._made and self._stored.get(diff_id) == blob

    def discard(self, diff_id: str, blob: Blob) -> None:
        """A kept blob a registry refused: removed from the store, so that layer() makes it
        again from the engine's export."""
        self.store.discard(blob.digest)
        with self._lock:
            if self._stored.get(diff_id) == blob:
                self._stored[diff_id] = Blob(blob.digest, blob.size)

    def config(self) -> bytes:
        """The image config's exact bytes: its digest is the image id on the classic image
        store; on the containerd store the id is its manifest's, which names it."""
        if self._config is None:
            kept = self.store.kept(self.image_id)
            manifest = _image_manifest(kept)
            if manifest is not None and manifest.config_digest:
                kept = self.store.kept(manifest.config_digest)
            self._config = kept
        if self._config is None:
            with self._lock:
                self._export()
        if self._config is None:
            raise PushError(
                f"the engine's export of image {short_id(self.image_id)} has no config",
                "rebuild the image (`shipit build`) and push again",
            )
        return self._config

    def close(self) -> None:
        self._closed = True
        # An export still running fails at its next block, for want of the pool.
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._preparing is not None and self._temporary is not None:
            # Compressing: it stops at its next block. Still waiting for the engine's first
            # byte (a push that needed no upload), it has written nothing: not waited for.
            self._preparing.join(self.stall_timeout)
        if self._lock.acquire(blocking=False):
            try:
                self._remove_temporary()
            finally:
                self._lock.release()
        # Else an export (a push thread's, after Ctrl-C) holds it, and removes the folder.

    def _remove_temporary(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None
        if self._temporary_lock is not None:
            os.close(self._temporary_lock)
            self._temporary_lock = None

    def _export(self) -> None:
        """Reads the image from the engine once: every layer is compressed, the config kept.
        Called with the lock held. A failed export is tried again by the push's next attempt."""
        if self._exported or self._closed:
            return
        try:
            self._read_export()
        except (tarfile.TarError, EOFError) as error:
            raise PushError(
                f"the engine's export of image {short_id(self.image_id)} ended early ({error})",
                "check the engine (`docker info`, its log) and push again",
            ) from error
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise PushError(
                f"no space left in {self._temporary} for the compressed layers",
                "free disk space, or point XDG_CACHE_HOME (or TMPDIR) at a larger disk",
            ) from error
        finally:
            if self._closed:
                self._remove_temporary()
        self._exported = True

    def _temporary_folder(self) -> Path:
        folder, self._temporary_lock = self.store.temporary_folder()
        return folder

    def _read_export(self) -> None:
        """Every `docker save` layout: Docker 20.10's (`<id>/layer.tar`, `<image id>.json`),
        and the OCI layout (`blobs/sha256/<digest>`) of Docker 25's classic store, where an
        uncompressed layer is named by its diff id and the config by the image id, and of
        the containerd store, where the image id names the manifest, which names the config
        and the compressed layers. Uncompressed layers are compressed; a compressed one,
        which the manifest may only name once it has been read, is kept as it is (a base
        layer that its registry holds is not). Only a layer of this image is kept."""
        image_hex = self.image_id.removeprefix("sha256:")
        base = self.base_layers()
        from_registry = {blob.digest for blob in base.blobs.values()} if base else set()
        small: dict[str, bytes] = {}
        copied: dict[str, Blob] = {}
        reader = io.BufferedReader(_ChunkReader(self.engine.export_image(self.image_id)), BLOCK)
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            for member in archive:
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted is None:
                    continue  # a folder, or a link to a layer already read
                name = member.name
                digest = "sha256:" + name.rsplit("/", 1)[-1]
                if name == f"{image_hex}.json":
                    self._config = extracted.read()
                elif name.endswith("/layer.tar") or (
                    name.startswith("blobs/sha256/") and digest in self.diff_ids
                ):
                    diff_id, blob = self._compress(extracted)
                    if diff_id in self.diff_ids and diff_id not in self._made:
                        self._made[diff_id] = self.store.adopt(diff_id, blob)
                elif not name.startswith("blobs/sha256/") or digest in from_registry:
                    continue
                elif member.size <= _SMALL_BLOB_BYTES:
                    small[digest] = extracted.read()
                else:
                    copied[digest] = self._copy(extracted, digest)
        image_blob = small.get(self.image_id)
        manifest = _image_manifest(image_blob)
        if manifest is None:
            self._config = self._config or image_blob
            return
        self._config = small.get(manifest.config_digest or "")
        for diff_id, layer in zip(self.diff_ids, manifest.layers(), strict=False):
            if diff_id in self._made:
                continue
            found = copied.get(layer.digest)
            if found is None and layer.digest in small:
                found = self._copy(io.BytesIO(small[layer.digest]), layer.digest)
            if found is not None:
                self._made[diff_id] = self.store.adopt(diff_id, found)

    def _copy(self, blob: IO[bytes], digest: str) -> Blob:
        """A compressed blob of the export into a file as it is, checked against its name."""
        handle, name = tempfile.mkstemp(dir=self._folder(), prefix="blob-")
        hashed = hashlib.sha256()
        size = 0
        with os.fdopen(handle, "wb") as file:
            for block in read_blocks(blob):
                hashed.update(block)
                size += len(block)
                file.write(block)
        if digest_of(hashed) != digest:
            raise PushError(
                f"the engine's export of image {short_id(self.image_id)} has a blob "
                f"{digest[:19]} whose bytes are another digest",
                "check the engine (`docker info`, its log) and push again",
            )
        return Blob(digest, size, Path(name))

    def _compress(self, layer: IO[bytes]) -> tuple[str, Blob]:
        return compress_layer(read_blocks(layer), self._folder(), self._pool)

    def _folder(self) -> Path:
        if self._temporary is None:  # made once the engine sends a layer, not before
            self._temporary = self._temporary_folder()
        return self._temporary
