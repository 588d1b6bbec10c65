"""The compressed layers and the config of an image that shipit uploads itself.

Docker 20.10's classic image store pushes each layer by compressing it with gzip on one
thread, once per registry: a new 130 MB base layer costs seconds per registry. shipit instead
compresses every layer once per push, on every core, and uploads the same bytes to each
registry. The compression is deterministic (push/compress.py: one library at one level and
block size, no time in the header), so the same layer gives the same blob on every run: the
digest learned once (`layers.json`) tells the next push whether a registry already holds the
layer, without compressing it again.

The blob store lives in the user's cache folder (`$XDG_CACHE_HOME/shipit/blobs/`). It keeps
image configs and small layers (a site's own layer, written by the build), and forgets the
least recently used ones beyond a size cap. Bigger layers are compressed into a temporary
folder for the push and deleted with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipit.digests import digest_of, sha256_digest
from shipit.labels import BUILT_BY_SHIPIT, LABEL_BUILDER
from shipit.lock import new_locked_file, try_lock
from shipit.push.compress import BLOB_FORMAT, BLOCK, gzip_blocks, read_blocks
from shipit.registries.ecr_cache import cache_directory, write_atomically

if TYPE_CHECKING:
    from shipit.engine import Engine

# Layers up to this size stay in the store after a push; bigger ones are made again.
KEEP_LAYER_BYTES = 16 << 20
STORE_CAP_BYTES = 512 << 20
# What `repositories.json` remembers of where blobs are, for cross-repository mounts: the
# most recent blobs, and per registry host the most recent repositories holding each.
HOLDER_BLOBS = 2000
HOLDER_HOSTS = 8
HOLDER_REPOSITORIES = 8
# In each push's temporary folder: locked for as long as the push runs.
PUSH_LOCK = "lock"


def engine_push_reason(
    uploader: str, engine: Engine, labels: Mapping[str, str] | None = None
) -> str | None:
    """Why the engine pushes images rather than shipit, None when shipit uploads them
    itself: on a local engine, with the classic image store, or with the containerd image
    store an image that shipit wrote (`labels`: the image's; without them, the images that
    shipit will write). What `docker build` made there has layers compressed by the engine,
    which only it can name."""
    if uploader != "auto":
        return f'uploader = "{uploader}"'
    if not engine.address.is_local_socket:
        return "a remote engine, whose export would cross the network uncompressed"
    if (
        labels is not None
        and labels.get(LABEL_BUILDER) != BUILT_BY_SHIPIT
        and engine.image_store() != "classic"
    ):
        return (
            "docker build made the image, and the containerd image store pushes the layers "
            "it compressed"
        )
    return None


def uploads_itself(uploader: str, engine: Engine, labels: Mapping[str, str] | None = None) -> bool:
    return engine_push_reason(uploader, engine, labels) is None


def keep_built_image(config: bytes, diff_id: str, layer: bytes) -> None:
    """Keeps a just-built image's config and its own layer (compressed) for the push, which
    then needs nothing from the engine when the base layers are known to the registries."""
    store = BlobStore.for_user()
    try:
        store.keep(config)
        if layer:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                store.keep_layer(diff_id, layer, pool)
    except OSError:
        pass  # only a cache: the push exports what it lacks from the engine


def keep_written_image(manifest: bytes, config: bytes, diff_id: str, layer: Blob) -> None:
    """Keeps what the push of an image loaded into the containerd image store needs: its
    manifest (whose digest is the image's id there, and which names its config and blobs),
    its config and its own layer's compressed file (moved into the store when small enough
    to keep, else only its digest learned)."""
    store = BlobStore.for_user()
    try:
        store.keep(manifest)
        store.keep(config)
        store.adopt(diff_id, layer)
    except OSError:
        pass  # only a cache: the push exports what it lacks from the engine


def compress_layer(
    blocks: Iterable[bytes], folder: Path, pool: ThreadPoolExecutor
) -> tuple[str, Blob]:
    """Compresses a layer (BLOCK-sized blocks, compress.read_blocks) into a new file in
    `folder`: its diff id and its blob, with that file."""
    uncompressed = hashlib.sha256()
    compressed = hashlib.sha256()
    size = 0

    def hashed(pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            uncompressed.update(piece)
            yield piece

    handle, name = tempfile.mkstemp(dir=folder, prefix="layer-")
    with os.fdopen(handle, "wb") as file:
        for piece in gzip_blocks(hashed(blocks), pool):
            compressed.update(piece)
            size += len(piece)
            file.write(piece)
    return digest_of(uncompressed), Blob(digest_of(compressed), size, Path(name))


def _binding(diff_id: str, blob: Blob) -> str:
    """An entry's check: it ties the blob to its layer, so an entry moved to another layer
    (a swap, an edit, a bad write) no longer matches. A guard against accidents: the
    registries check every upload's digest, and a kept file is checked against both."""
    bound = f"{BLOB_FORMAT} {diff_id} {blob.digest} {blob.size}".encode()
    return hashlib.sha256(bound).hexdigest()[:32]


def _is_digest(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 71
        and value.startswith("sha256:")
        and all(c in "0123456789abcdef" for c in value[7:])
    )


def _learned_blob(diff_id: object, entry: object) -> Blob | None:
    if not _is_digest(diff_id) or not isinstance(entry, dict):
        return None
    digest, size = entry.get("digest"), entry.get("size")
    if not _is_digest(digest) or not isinstance(size, int) or isinstance(size, bool):
        return None
    assert isinstance(diff_id, str) and isinstance(digest, str)
    blob = Blob(digest, size)
    return blob if entry.get("check") == _binding(diff_id, blob) else None


def _hashes_of_layer_file(path: Path) -> tuple[str, str]:
    """The digests of a compressed layer file's bytes and of what they inflate to ("" for
    bytes that are not one gzip stream)."""
    compressed = hashlib.sha256()
    inflated = hashlib.sha256()
    inflater = zlib.decompressobj(31)
    whole = True
    with path.open("rb") as file:
        for block in iter(lambda: file.read(BLOCK), b""):
            compressed.update(block)
            pending = block
            while pending and whole:
                try:
                    # Bounded output: a small blob may inflate to far more than it is.
                    inflated.update(inflater.decompress(pending, BLOCK))
                except zlib.error:
                    whole = False
                    break
                pending = inflater.unconsumed_tail
    while whole and not inflater.eof:
        try:
            piece = inflater.decompress(b"", BLOCK)
        except zlib.error:
            whole = False
            break
        if not piece:
            whole = False  # the stream ends early
            break
        inflated.update(piece)
    layer = digest_of(inflated) if whole and not inflater.unused_data else ""
    return digest_of(compressed), layer


@dataclass(frozen=True)
class Blob:
    """A blob's digest and size, and the file holding its bytes (None when only known)."""

    digest: str
    size: int
    path: Path | None = None


class BlobStore:
    """The compressed blobs kept between pushes, and what each layer compresses to."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    @classmethod
    def for_user(cls, environ: Mapping[str, str] | None = None) -> BlobStore:
        return cls(cache_directory(os.environ if environ is None else environ) / "blobs")

    @property
    def _layers_file(self) -> Path:
        return self.directory / "layers.json"

    def make_directory(self) -> None:
        """The store's folder, private to the user as the rest of shipit's cache is."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def temporary_folder(self) -> tuple[Path, int | None]:
        """A new folder for a push's (or a build's) compressed layers, and the descriptor of
        its lock file, which stays locked until it is closed: forget_abandoned_pushes (at the
        start of every push) leaves the folder alone meanwhile. Beside the store, so a small
        layer moves into it; else in the system's temp, without a lock."""
        try:
            self.make_directory()
            folder = Path(tempfile.mkdtemp(prefix="push-", dir=self.directory))
        except OSError:
            return Path(tempfile.mkdtemp(prefix="shipit-push-")), None
        try:
            return folder, new_locked_file(folder, PUSH_LOCK)
        except OSError:  # without it, the day-old rule still applies
            return folder, None

    @contextlib.contextmanager
    def working_folder(self) -> Iterator[Path]:
        """A temporary_folder, removed with its lock at the end of the block."""
        folder, lock = self.temporary_folder()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if lock is not None:
                os.close(lock)

    def path_of(self, digest: str) -> Path:
        return self.directory / "sha256" / digest.removeprefix("sha256:")

    def _layers(self) -> dict[str, Blob]:
        """The learned layers whose entries still bind their digest to their diff id.

        An entry whose check does not match (swapped with another's, edited, half written)
        is dropped; a map in which two layers share a blob cannot say which one it is, so
        it is dropped whole. Either way the push compresses the layer again, and learns it.
        """
        try:
            data = json.loads(self._layers_file.read_text())
        except (OSError, ValueError):
            return {}
        entries = data.get(BLOB_FORMAT) if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            return {}
        learned = {}
        for diff_id, entry in entries.items():
            blob = _learned_blob(diff_id, entry)
            if blob is not None:
                learned[diff_id] = blob
        if len({blob.digest for blob in learned.values()}) != len(learned):
            return {}
        return learned

    def layer(self, diff_id: str) -> Blob | None:
        """What the layer compresses to, and its file when the store still has it intact:
        a kept file is used only when its bytes hash to its name and inflate to the layer."""
        blob = self._layers().get(diff_id)
        if blob is None:
            return None
        path = self.path_of(blob.digest)
        try:
            kept = path.stat().st_size == blob.size <= KEEP_LAYER_BYTES
        except OSError:
            return blob
        if not kept:
            return blob
        digest, inflated = _hashes_of_layer_file(path)
        if digest != blob.digest:
            self.discard(blob.digest)  # damaged: the push makes it again from the export
            return blob
        if inflated != diff_id:
            # The file is the blob the entry names, and that blob is another layer.
            self.forget(diff_id)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: the last to be forgotten
        return Blob(blob.digest, blob.size, path)

    def learn(self, diff_id: str, blob: Blob) -> None:
        # Only a cache: when it cannot be written, the next push compresses the layer again.
        with contextlib.suppress(OSError), self._lock:
            entries = self._layers()
            # Another layer that was said to give this blob was wrong.
            others = {key: known for key, known in entries.items() if known.digest != blob.digest}
            self._write_layers({**others, diff_id: blob})

    def forget(self, diff_id: str) -> None:
        with contextlib.suppress(OSError), self._lock:
            entries = self._layers()
            if entries.pop(diff_id, None) is not None:
                self._write_layers(entries)

    def _write_layers(self, entries: Mapping[str, Blob]) -> None:
        # Entries of another format are of no use to this shipit: they are not kept.
        document = {
            diff_id: {"digest": blob.digest, "size": blob.size, "check": _binding(diff_id, blob)}
            for diff_id, blob in entries.items()
        }
        self._write(self._layers_file, json.dumps({BLOB_FORMAT: document}).encode())

    def discard(self, digest: str) -> None:
        """Removes a kept blob that is damaged or that a registry refused."""
        with contextlib.suppress(OSError):
            self.path_of(digest).unlink(missing_ok=True)

    @property
    def _holders_file(self) -> Path:
        return self.directory / "repositories.json"

    def _holders(self) -> dict[str, dict[str, list[str]]]:
        """blob digest -> registry host -> repositories known to hold it, oldest first;
        whatever of the file does not read as that is left out."""
        try:
            data = json.loads(self._holders_file.read_text())
        except (OSError, ValueError):
            return {}
        holders: dict[str, dict[str, list[str]]] = {}
        for digest, hosts in data.items() if isinstance(data, dict) else ():
            if not _is_digest(digest) or not isinstance(hosts, dict):
                continue
            known = {
                host: [name for name in names if isinstance(name, str) and name]
                for host, names in hosts.items()
                if isinstance(host, str) and isinstance(names, list)
            }
            if any(known.values()):
                holders[digest] = {host: names for host, names in known.items() if names}
        return holders

    def holders(self, digest: str, host: str) -> list[str]:
        """The repositories of registry `host` known to hold the blob, the latest first."""
        return self._holders().get(digest, {}).get(host, [])[::-1]

    def learn_holder(self, digest: str, host: str, repository: str) -> None:
        """Remembers that a repository holds the blob (a HEAD found it, an upload or a
        mount put it there). Only a cache: a mount from a repository that lost the blob is
        declined, and the upload goes on as without it."""
        with contextlib.suppress(OSError), self._lock:
            holders = self._holders()
            hosts = holders.pop(digest, {})
            names = [name for name in hosts.pop(host, []) if name != repository]
            hosts[host] = [*names, repository][-HOLDER_REPOSITORIES:]
            holders[digest] = dict(list(hosts.items())[-HOLDER_HOSTS:])
            recent = dict(list(holders.items())[-HOLDER_BLOBS:])
            self._write(self._holders_file, json.dumps(recent).encode())

    def keep(self, data: bytes) -> Blob:
        """Stores bytes (a config, a small layer) under their digest."""
        digest = sha256_digest(data)
        path = self.path_of(digest)
        if self.kept(digest) is None:  # absent, or damaged: written again
            self._write(path, data)
            self._forget_oldest()
        return Blob(digest, len(data), path)

    def kept(self, digest: str) -> bytes | None:
        """A kept blob's bytes, when they are still there and still hash to `digest`."""
        try:
            data = self.path_of(digest).read_bytes()
        except OSError:
            return None
        return data if sha256_digest(data) == digest else None

    def keep_layer(self, diff_id: str, layer: bytes, pool: ThreadPoolExecutor) -> Blob:
        """Compresses a layer into the store and learns its digest."""
        blob = self.keep(b"".join(gzip_blocks(read_blocks(io.BytesIO(layer)), pool)))
        self.learn(diff_id, blob)
        return blob

    def adopt(self, diff_id: str, blob: Blob) -> Blob:
        """Moves a compressed layer file into the store when it is small enough to keep."""
        self.learn(diff_id, blob)
        if blob.path is None or blob.size > KEEP_LAYER_BYTES:
            return blob
        path = self.path_of(blob.digest)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(blob.path, path)
        except OSError:
            return blob  # not kept: the push uses it from where it is
        self._forget_oldest()
        return Blob(blob.digest, blob.size, path)

    def _write(self, path: Path, data: bytes) -> None:
        self.make_directory()
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomically(path, data)

    def _forget_oldest(self) -> None:
        # Another shipit may be forgetting the same files: a file gone meanwhile is fine.
        files = []
        with contextlib.suppress(OSError):
            for entry in (self.directory / "sha256").iterdir():
                with contextlib.suppress(OSError):
                    info = entry.stat()
                    files.append((info.st_mtime, info.st_size, entry))
        total = sum(size for _, size, _ in files)
        for _, size, entry in sorted(files, key=lambda found: found[0]):
            if total <= STORE_CAP_BYTES:
                break
            total -= size
            with contextlib.suppress(OSError):
                entry.unlink(missing_ok=True)

    def forget_abandoned_pushes(self) -> None:
        """Removes the temporary folders of pushes that ended without removing them (a kill -9,
        a power cut). A push holds the lock of its folder's lock file while it runs, so a
        folder whose lock can be taken is abandoned. A folder without one (an older shipit's,
        or one whose push is just starting) is removed once it is a day old."""
        cutoff = time.time() - 24 * 3600
        with contextlib.suppress(OSError):
            for entry in self.directory.glob("push-*"):
                with contextlib.suppress(OSError):
                    _forget_if_abandoned(entry, cutoff)


def _forget_if_abandoned(folder: Path, cutoff: float) -> None:
    try:
        descriptor = try_lock(folder / PUSH_LOCK, create=False)
    except FileNotFoundError:
        if folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if descriptor is None:
        return  # its push is running
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(descriptor)
