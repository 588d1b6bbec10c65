"""One registry's upload of an image by shipit itself: each layer the registry lacks, the
config, then the manifest under the first tag.

A registry that holds a layer's blob already (a base layer pushed before) is asked by a HEAD
of its digest, learned from an earlier compression: nothing is compressed or sent for it.
A blob that another repository of the same registry is known to hold is mounted from there
(`POST .../blobs/uploads/?mount=...&from=...`), as `docker push` does; a registry that
declines the mount opens an upload session instead, and the bytes go there.

Before the manifest PUT every layer's blob must be the one this push settled on for that
layer's diff id: the config names layers by diff id, and a manifest that lists another
blob would be an image no client can pull.
"""

from __future__ import annotations

import io
from typing import IO

from shipit.digests import sha256_digest, short_id
from shipit.errors import PushError, stalled_push
from shipit.progress import LayerProgress, Progress
from shipit.push.blobs import Blob
from shipit.push.image import PushImage
from shipit.push.image_blobs import ImageBlobs
from shipit.push.targets import Target
from shipit.registries.errors import RegistryConnectionError, RegistryResponseError
from shipit.registries.manifest import Manifest, image_manifest

# A registry's answers meaning the bytes it received are not the blob they were sent as.
REFUSED_BYTES = frozenset({"DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "SIZE_INVALID"})


def _send(
    target: Target,
    image: PushImage,
    blob: Blob,
    content: IO[bytes],
    timeout: float,
    location: str | None = None,
) -> None:
    try:
        target.client.upload_blob(
            target.repository, blob.digest, content, blob.size, timeout=timeout, location=location
        )
    except RegistryConnectionError as error:
        if error.timed_out:
            raise stalled_push(f"{target.reference}:{image.first_tag}", timeout) from error
        raise


def _held(target: Target, blobs: ImageBlobs, blob: Blob) -> bool:
    """Whether the registry's repository holds the blob already (and, if so, remembered)."""
    if target.client.blob_size(target.repository, blob.digest) != blob.size:
        return False
    blobs.store.learn_holder(blob.digest, target.client.host, target.repository)
    return True


def _put(target: Target, image: PushImage, blobs: ImageBlobs, blob: Blob) -> tuple[int, str]:
    """Puts a blob the repository lacks into it: the bytes uploaded, and the repository it
    was mounted from instead ("" when it was uploaded)."""
    client = target.client
    location = None
    holders = blobs.store.holders(blob.digest, client.host)
    source = next((name for name in holders if name != target.repository), "")
    if source:
        location = client.mount_blob(
            target.repository, blob.digest, source, timeout=blobs.stall_timeout
        )
    if location is None and source:
        sent = 0
    else:
        assert blob.path is not None
        with blob.path.open("rb") as content:
            _send(target, image, blob, content, blobs.stall_timeout, location)
        sent, source = blob.size, ""
    blobs.store.learn_holder(blob.digest, client.host, target.repository)
    return sent, source


def _kept_blob_failure(error: Exception) -> str:
    """Why a blob could not be put into the registry, when making it again may help."""
    if isinstance(error, FileNotFoundError):
        return "is gone from the store"
    if isinstance(error, RegistryResponseError) and error.code in REFUSED_BYTES:
        return f"was refused by the registry ({error.code})"
    return ""


def _same(one: Blob | None, other: Blob) -> bool:
    return one is not None and (one.digest, one.size) == (other.digest, other.size)


def _layer(
    target: Target,
    image: PushImage,
    blobs: ImageBlobs,
    diff_id: str,
    progress: Progress,
    layer_progress: LayerProgress | None,
) -> tuple[Blob, int]:
    """The layer's blob in this registry, and the bytes uploaded for it."""
    base = blobs.base_layers()
    if base is not None and diff_id in base.blobs:
        sent = base.put_into(target, diff_id, progress, layer_progress)
        return Blob(base.blobs[diff_id].digest, base.blobs[diff_id].size), sent
    short = short_id(diff_id)
    label = f"{target.name} {short}"
    known = blobs.known(diff_id)
    if known is not None and _held(target, blobs, known):
        if layer_progress is not None:
            layer_progress(label, "layer already exists", known.size, known.size)
        return known, 0
    if layer_progress is not None:
        layer_progress(label, "compressing", 0, 0)
    blob = blobs.layer(diff_id)
    if not _same(known, blob) and _held(target, blobs, blob):
        return blob, 0
    if layer_progress is not None:
        layer_progress(label, "pushing", 0, blob.size)
    try:
        sent, source = _put(target, image, blobs, blob)
    except (RegistryResponseError, FileNotFoundError) as error:
        failure = _kept_blob_failure(error)
        if not failure or not blobs.from_store(diff_id, blob):
            raise
        progress(
            f"{target.name}: the kept blob of layer {short} {failure}; making it again "
            "from the engine's export"
        )
        blobs.discard(diff_id, blob)
        blob = blobs.layer(diff_id)
        sent, source = _put(target, image, blobs, blob)
    if source:
        if layer_progress is not None:
            layer_progress(label, f"mounted from {source}", blob.size, blob.size)
        progress(f"{target.name}: layer {short} mounted from {source}")
        return blob, 0
    if layer_progress is not None:
        layer_progress(label, "pushed", blob.size, blob.size)
    progress(f"{target.name}: uploaded layer {short} ({blob.size:,} bytes)")
    return blob, sent


def _settled_layers(
    target: Target,
    image: PushImage,
    blobs: ImageBlobs,
    progress: Progress,
    layer_progress: LayerProgress | None,
) -> tuple[list[Blob], int]:
    """Each layer's blob in the registry, checked against what the push settled on for its
    diff id: a layer that another registry's thread made from the export meanwhile, as
    another blob than the store said, is put there again as the export made it."""
    chosen = []
    uploaded = 0
    for diff_id in image.layers:
        blob, sent = _layer(target, image, blobs, diff_id, progress, layer_progress)
        chosen.append(blob)
        uploaded += sent
    base = blobs.base_layers()
    made = [diff_id for diff_id in image.layers if base is None or diff_id not in base.blobs]
    for index, diff_id in enumerate(image.layers):
        if diff_id in made and not _same(blobs.known(diff_id), chosen[index]):
            chosen[index], sent = _layer(target, image, blobs, diff_id, progress, layer_progress)
            uploaded += sent
    layer_of: dict[str, str] = {}
    for diff_id, blob in zip(image.layers, chosen, strict=True):
        shared = layer_of.setdefault(blob.digest, diff_id) != diff_id
        if shared or (diff_id in made and not _same(blobs.known(diff_id), blob)):
            raise PushError(
                f"{target.reference}:{image.first_tag}: the blob of layer {short_id(diff_id)} "
                "is not the one this push made for it; the manifest was not pushed",
                "push again; if it persists remove ~/.cache/shipit/blobs",
            )
    return chosen, uploaded


def upload_image(
    target: Target,
    image: PushImage,
    blobs: ImageBlobs,
    progress: Progress,
    layer_progress: LayerProgress | None = None,
    *,
    by_digest: bool = False,
) -> tuple[Manifest, int]:
    """Uploads what the registry lacks and the manifest, under the first tag (or, for one
    platform's image of an index, by its digest alone): the manifest, and the layer bytes
    uploaded."""
    chosen, uploaded = _settled_layers(target, image, blobs, progress, layer_progress)
    config = blobs.config()
    manifest = image_manifest(config, [(blob.digest, blob.size) for blob in chosen])
    if not image.is_served_by(manifest):
        # The containerd image store names the image by the manifest it loaded: another one
        # would be another image than the one that passed its smoke test.
        raise PushError(
            f"{target.reference}:{image.first_tag}: the manifest of image {short_id(image.id)} "
            f"comes to {manifest.digest}, which is not that image",
            "rebuild the image (`shipit build`) and push again; if it persists remove "
            "~/.cache/shipit/blobs",
        )
    config_blob = Blob(sha256_digest(config), len(config))
    if target.client.blob_size(target.repository, config_blob.digest) != len(config):
        _send(target, image, config_blob, io.BytesIO(config), blobs.stall_timeout)
    put_manifest(target, image.first_tag if not by_digest else manifest.digest, manifest)
    return manifest, uploaded


def put_manifest(target: Target, reference: str, manifest: Manifest) -> None:
    """PUTs the manifest's bytes, which the registry must store under their own digest."""
    answered = target.client.put_manifest(target.repository, reference, manifest)
    if answered and answered != manifest.raw_digest:
        raise PushError(
            f"{target.reference}:{reference}: the registry stored the manifest as "
            f"{answered}, not as {manifest.raw_digest}",
            "push again; if it persists the registry rewrites manifests",
        )
