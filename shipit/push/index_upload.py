"""One registry's upload of a multi-platform image: each platform's image as upload.py puts
one (its blobs, then its manifest by digest, so that no tag names it alone), then the OCI image
index that names them all, under the first tag. The index is written the same way every time,
so equal images give an equal index digest.

An index the registry serves already is this image when it names exactly these platforms, in
this order, each with a manifest whose config is that platform's image: the child manifests
are read (a few hundred bytes each), no config blob is.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from shipit.digests import sha256_digest
from shipit.errors import PushError
from shipit.platforms import Platform
from shipit.progress import LayerProgress, Progress
from shipit.push.image import PushImage
from shipit.push.image_blobs import ImageBlobs
from shipit.push.targets import Target
from shipit.push.upload import put_manifest, upload_image
from shipit.registries.manifest import OCI_INDEX, Manifest


def index_of(entries: list[tuple[Platform, Manifest]]) -> Manifest:
    """The OCI image index of these platforms' manifests, in this order."""
    content = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.raw),
                "platform": platform.descriptor(),
            }
            for platform, manifest in entries
        ],
    }
    raw = json.dumps(content, indent=3).encode()
    return Manifest(digest=sha256_digest(raw), media_type=OCI_INDEX, content=content, raw=raw)


def serves_this_index(target: Target, image: PushImage, served: Manifest) -> bool:
    """Whether `served` is an index of exactly `image`'s platform images."""
    if not served.is_index:
        return False
    entries = served.content.get("manifests")
    if not isinstance(entries, list) or len(entries) != len(image.platforms):
        return False
    for entry, platform_image in zip(entries, image.platforms, strict=True):
        if not isinstance(entry, dict) or not isinstance(entry.get("platform"), dict):
            return False
        if Platform.of(entry["platform"]) != platform_image.platform:
            return False
        child = target.client.get_manifest(target.repository, str(entry.get("digest", "")))
        # The image id is its config's digest on the classic store, its manifest's on the
        # containerd store.
        if platform_image.id not in (child.config_digest, child.digest):
            return False
    return True


def upload_index(
    target: Target,
    image: PushImage,
    blobs_of: Callable[[str], ImageBlobs],
    progress: Progress,
    layer_progress: LayerProgress | None = None,
    *,
    before_tag: Callable[[Manifest], None] | None = None,
) -> tuple[Manifest, int]:
    """Uploads every platform's image and the index under the first tag: the index, and the
    layer bytes uploaded. `before_tag` (the signing) runs once the index is in the registry
    by digest, before the tag names it."""
    entries = []
    uploaded = 0
    for platform_image in image.platforms:
        one = image.of_platform(platform_image)
        manifest, sent = upload_image(
            target, one, blobs_of(platform_image.id), progress, layer_progress, by_digest=True
        )
        progress(f"{target.name}: {platform_image.platform} is {manifest.digest[:19]}")
        entries.append((platform_image.platform, manifest))
        uploaded += sent
    index = index_of(entries)
    if len({manifest.digest for _, manifest in entries}) != len(entries):
        raise PushError(
            f"{target.reference}: two platforms of the index are one image",
            "check the platforms setting and the base image's index",
        )
    if before_tag is not None:
        put_manifest(target, index.digest, index)
        before_tag(index)
    put_manifest(target, image.first_tag, index)
    return index, uploaded
