"""The archives that `docker load` takes for an image shipit writes (assemble.py says what
the image is): the classic image store's `docker save` archive of the site layer and the
config, streamed as the site is read, and for the containerd image store an OCI image layout
whose manifest is the one shipit uploads. Neither sends the base image's layers, which the
engine holds.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shipit.assemble import Recipe, config_id, image_config
from shipit.digests import digest_of, sha256_digest
from shipit.inputs import SourceFile
from shipit.render import ContextFiles, RenderedSite, padded, tar_end, tar_header
from shipit.tar_headers import FIXED_MTIME, directory_header, file_header

if TYPE_CHECKING:
    from shipit.push.blobs import Blob

# The layer


def _layer_members(
    site: RenderedSite, recipe: Recipe
) -> Iterator[tuple[bytes, int, tuple[str, bytes | SourceFile] | None]]:
    """(tar header, size, content) of every member of the site layer, in order: the
    destination and its parent folders first, then each folder right before its first
    file. Content is the context's name with a rendered file's bytes or a static file's
    SourceFile, or None for a folder. Each file keeps the mode and time of its context
    entry, as COPY keeps them."""
    root = recipe.copy_destination.strip("/")
    parts = root.split("/")
    for depth in range(1, len(parts) + 1):
        yield directory_header("/".join(parts[:depth]) + "/"), 0, None
    prefix = recipe.copy_source + "/"
    open_folders: list[str] = []
    for name, entry in site.files.entries():
        if not name.startswith(prefix):
            continue
        relative = name[len(prefix) :]
        folders = relative.split("/")[:-1]
        common = 0
        while (
            common < min(len(open_folders), len(folders))
            and open_folders[common] == folders[common]
        ):
            common += 1
        del open_folders[common:]
        for folder in folders[common:]:
            open_folders.append(folder)
            yield directory_header(f"{root}/{'/'.join(open_folders)}/"), 0, None
        if isinstance(entry, bytes):
            size, sha256 = len(entry), hashlib.sha256(entry).hexdigest()
        else:
            size, sha256 = entry.size, entry.sha256
        yield tar_header(f"{root}/{relative}", size, sha256), size, (name, entry)


def member_header(name: str, size: int) -> bytes:
    """A member of the archive the engine loads, which names no owner."""
    return file_header(name, size, FIXED_MTIME, owner="")


_COALESCE_BYTES = 256 * 1024


def _coalesced(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """The same bytes in fewer, larger pieces: each piece is one chunk of the HTTP upload,
    and a site of many small files would otherwise cost several system calls per file."""
    waiting: list[bytes] = []
    held = 0
    for piece in pieces:
        if len(piece) >= _COALESCE_BYTES:
            if waiting:
                yield b"".join(waiting)
                waiting, held = [], 0
            yield piece
            continue
        waiting.append(piece)
        held += len(piece)
        if held >= _COALESCE_BYTES:
            yield b"".join(waiting)
            waiting, held = [], 0
    if waiting:
        yield b"".join(waiting)


class Assembly:
    """The image as an archive for `docker load`: the site layer, then the config (which
    names the layer by its digest, known once the layer has been streamed), then the
    manifest. The base image's layers are named but not sent: the engine holds them, and
    loads a layer from the archive only when it lacks it. `image_id` is set once the whole
    archive has been read, with `config` (its exact bytes) and, for a layer of at most
    `keep_layer_bytes`, `layer` (the layer's bytes, for the push to compress)."""

    def __init__(
        self,
        site: RenderedSite,
        recipe: Recipe,
        base: Mapping[str, Any],
        history: list[dict[str, Any]],
        labels: Mapping[str, str],
        created: str,
        tags: tuple[str, ...],
        keep_layer_bytes: int = 0,
    ) -> None:
        self.site = site
        self.recipe = recipe
        self.base = base
        self.history = history
        self.labels = labels
        self.created = created
        self.tags = list(tags)
        self.keep_layer_bytes = keep_layer_bytes
        self.image_id = ""
        self.config = b""
        self.layer = b""
        self.layer_diff_id = ""

    def archive(self) -> Iterator[bytes]:
        return _coalesced(self._members())

    def _members(self) -> Iterator[bytes]:
        layer_size = sum(
            len(header) + padded(size) for header, size, _ in _layer_members(self.site, self.recipe)
        )
        layer_size += len(tar_end(layer_size))
        layer_header = member_header("layer.tar", layer_size)
        yield layer_header
        digest = hashlib.sha256()
        written = 0
        kept: list[bytes] | None = [] if layer_size <= self.keep_layer_bytes else None
        for piece in self._layer():
            digest.update(piece)
            written += len(piece)
            if kept is not None:
                kept.append(piece)
            yield piece
        end = tar_end(written)
        digest.update(end)
        written += len(end)
        yield end
        if written != layer_size:
            raise RuntimeError(f"the site layer came to {written} bytes, not {layer_size}")
        config = image_config(
            self.base,
            self.history,
            self.recipe,
            self.labels,
            digest_of(digest),
            self.created,
        )
        base_layers = len((self.base.get("RootFS") or {}).get("Layers") or ())
        manifest = json.dumps(
            [
                {
                    "Config": "config.json",
                    "RepoTags": self.tags,
                    "Layers": [f"base/{index}/layer.tar" for index in range(base_layers)]
                    + ["layer.tar"],
                }
            ]
        ).encode()
        offset = len(layer_header) + layer_size
        for name, data in (("config.json", config), ("manifest.json", manifest)):
            header = member_header(name, len(data))
            yield header + data + tarfile.NUL * (padded(len(data)) - len(data))
            offset += len(header) + padded(len(data))
        yield tar_end(offset)
        self.image_id = config_id(config)
        self.config = config
        self.layer_diff_id = digest_of(digest)
        if kept is not None:
            self.layer = b"".join([*kept, end])

    def _layer(self) -> Iterator[bytes]:
        return _layer_pieces(self.site, self.recipe)


def _layer_pieces(site: RenderedSite, recipe: Recipe) -> Iterator[bytes]:
    """The site layer's bytes without the tar's end."""
    for header, size, content in _layer_members(site, recipe):
        yield header
        if content is None:
            continue
        name, entry = content
        if isinstance(entry, bytes):
            yield entry
        else:
            yield from ContextFiles.chunks(name, entry)
        if padded(size) != size:
            yield tarfile.NUL * (padded(size) - size)


def site_layer(site: RenderedSite, recipe: Recipe) -> Iterator[bytes]:
    """The whole site layer, as a tar, in pieces."""
    written = 0
    for piece in _layer_pieces(site, recipe):
        written += len(piece)
        yield piece
    yield tar_end(written)


class LayoutAssembly:
    """The image as an OCI image layout for `docker load` on the containerd image store,
    which keeps the manifest it is given and names the image by its digest: the manifest is
    the one shipit uploads (registries/manifest.image_manifest), so both stores give the
    same image. Its base layers are the base's blobs in its registry (`base_layers`, digest
    and size, base first), named but not sent: the engine pulled that image, and the load
    checks no blob it is not sent (a layer whose snapshot the engine holds runs from that).
    The site layer is compressed first (the layout names each blob by its digest) into
    `layer`; the archive then sends it, the config and the manifest."""

    def __init__(
        self,
        config: bytes,
        layer: Blob,
        base_layers: Sequence[tuple[str, int]],
    ) -> None:
        if layer.path is None:
            raise ValueError("the site layer's blob must be a file")
        from shipit.registries.manifest import image_manifest

        self.config = config
        self.layer = layer
        self.manifest = image_manifest(config, [*base_layers, (layer.digest, layer.size)])
        self.image_id = self.manifest.digest

    def archive(self) -> Iterator[bytes]:
        return _coalesced(self._members())

    def _members(self) -> Iterator[bytes]:
        from shipit.registries.manifest import OCI_INDEX, canonical_json

        offset = 0
        layout = canonical_json({"imageLayoutVersion": "1.0.0"})
        index = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": self.manifest.media_type,
                        "digest": self.manifest.digest,
                        "size": len(self.manifest.raw),
                    }
                ],
            }
        )
        header = member_header(_blob_name(self.layer.digest), self.layer.size)
        yield header
        sent = 0
        assert self.layer.path is not None
        with self.layer.path.open("rb") as file:
            for piece in iter(lambda: file.read(_COALESCE_BYTES), b""):
                sent += len(piece)
                yield piece
        if sent != self.layer.size:
            raise RuntimeError(f"the site layer's blob came to {sent} bytes, not {self.layer.size}")
        yield tarfile.NUL * (padded(sent) - sent)
        offset += len(header) + padded(sent)
        for name, data in (
            ("oci-layout", layout),
            (_blob_name(sha256_digest(self.config)), self.config),
            (_blob_name(self.manifest.digest), self.manifest.raw),
            ("index.json", index),
        ):
            header = member_header(name, len(data))
            yield header + data + tarfile.NUL * (padded(len(data)) - len(data))
            offset += len(header) + padded(len(data))
        yield tar_end(offset)


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")
