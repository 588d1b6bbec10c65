"""One registry's upload of an image by shipit itself: each layer the registry lacks, the
config, then the manifest under the first tag.

A registry that holds a layer's blob already (a base layer pushed before) is asked by a HEAD
of its digest, learned from an earlier compression: nothing is compressed or sent for it.
"""

from __future__ import annotations

import io
import json
from typing import IO

from shipit.errors import PushError, stalled_push
from shipit.progress import LayerProgress, Progress
from shipit.push.blobs import Blob, ImageBlobs
from shipit.push.image import PushImage
from shipit.push.targets import Target
from shipit.registries.distribution import (
    DOCKER_MANIFEST_V2,
    Manifest,
    RegistryConnectionError,
)

LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"


def _descriptor(media_type: str, blob: Blob) -> dict[str, object]:
    return {"mediaType": media_type, "size": blob.size, "digest": blob.digest}


def _send(target: Target, image: PushImage, blob: Blob, content: IO[bytes], timeout: float) -> None:
    try:
        target.client.upload_blob(
            target.repository, blob.digest, content, blob.size, timeout=timeout
        )
    except RegistryConnectionError as error:
        if error.timed_out:
            raise stalled_push(f"{target.reference}:{image.first_tag}", timeout) from error
        raise


def _layer(
    target: Target,
    image: PushImage,
    blobs: ImageBlobs,
    diff_id: str,
    progress: Progress,
    layer_progress: LayerProgress | None,
) -> tuple[Blob, int]:
    """The layer's blob in this registry, and the bytes uploaded for it."""
    label = f"{target.name} {diff_id.removeprefix('sha256:')[:12]}"
    known = blobs.known(diff_id)
    if known is not None and target.client.blob_size(target.repository, known.digest) == known.size:
        if layer_progress is not None:
            layer_progress(label, "layer already exists", known.size, known.size)
        return known, 0
    if layer_progress is not None:
        layer_progress(label, "compressing", 0, 0)
    blob = blobs.layer(diff_id)
    if target.client.blob_size(target.repository, blob.digest) == blob.size:
        return blob, 0
    if layer_progress is not None:
        layer_progress(label, "pushing", 0, blob.size)
    assert blob.path is not None
    with blob.path.open("rb") as content:
        _send(target, image, blob, content, blobs.stall_timeout)
    if layer_progress is not None:
        layer_progress(label, "pushed", blob.size, blob.size)
    progress(f"{target.name}: uploaded layer {diff_id[7:19]} ({blob.size:,} bytes)")
    return blob, blob.size


def upload_image(
    target: Target,
    image: PushImage,
    blobs: ImageBlobs,
    progress: Progress,
    layer_progress: LayerProgress | None = None,
) -> tuple[str, int]:
    """Uploads what the registry lacks and the manifest under the first tag: the manifest's
    digest, and the layer bytes uploaded."""
    layers = []
    uploaded = 0
    for diff_id in image.layers:
        blob, sent = _layer(target, image, blobs, diff_id, progress, layer_progress)
        layers.append(_descriptor(LAYER_MEDIA_TYPE, blob))
        uploaded += sent
    config = blobs.config()
    config_blob = Blob(image.id, len(config))
    if target.client.blob_size(target.repository, image.id) != len(config):
        _send(target, image, config_blob, io.BytesIO(config), blobs.stall_timeout)
    content = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_V2,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config_blob),
        "layers": layers,
    }
    raw = json.dumps(content, indent=3).encode()
    manifest = Manifest(digest="", media_type=DOCKER_MANIFEST_V2, content=content, raw=raw)
    answered = target.client.put_manifest(target.repository, image.first_tag, manifest)
    if answered and answered != manifest.raw_digest:
        raise PushError(
            f"{target.reference}:{image.first_tag}: the registry stored the manifest as "
            f"{answered}, not as {manifest.raw_digest}",
            "push again; if it persists the registry rewrites manifests",
        )
    return manifest.raw_digest, uploaded
