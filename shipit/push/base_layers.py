"""The base image's layers as its registry holds them, for an image built from a platform of
a base index: the push puts them into each registry from there (a HEAD when it holds them, a
cross-repository mount on the same registry, else a copy streamed from the base's registry),
never compressing them again. Their bytes are then the base's own, on every machine, so the
image's digest depends on nothing local.

The image's labels name the base (its reference and that platform's manifest digest); the
base's config must list exactly the image's first layers, else the push makes the blobs from
the engine's export as for any image. On the containerd image store the build names them too
(assemble.LayoutAssembly): the engine loads the image shipit uploads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shipit.digests import short_id
from shipit.errors import ShipitError
from shipit.labels import LABEL_BASE_DIGEST, LABEL_BASE_NAME
from shipit.platforms import Platform
from shipit.progress import LayerProgress, Progress
from shipit.push.targets import Target
from shipit.reference import parse_reference
from shipit.registries.base_source import base_source
from shipit.registries.blob_copy import copy_blob
from shipit.registries.transport import RegistryRules, rules_for

# Layer media types whose blobs are gzip, as the manifests shipit writes declare them.
_GZIP_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    }
)


@dataclass(frozen=True)
class BaseBlob:
    """A base layer as its registry holds it (compressed: the digest the manifest names)."""

    digest: str
    size: int


@dataclass(frozen=True)
class BaseLayers:
    """Where a base image's layers are: `reference`'s registry, by diff id. `config_digest`
    is the base's config there, which the classic image store names the base image by."""

    reference: str
    blobs: Mapping[str, BaseBlob]
    rules: RegistryRules
    config_digest: str = ""

    def put_into(
        self,
        target: Target,
        diff_id: str,
        progress: Progress,
        layer_progress: LayerProgress | None,
    ) -> int:
        """Puts the layer into the target's repository; the bytes copied for it."""
        blob = self.blobs[diff_id]
        label = f"{target.name} {short_id(diff_id)}"
        if target.client.blob_size(target.repository, blob.digest) == blob.size:
            if layer_progress is not None:
                layer_progress(label, "layer already exists", blob.size, blob.size)
            return 0
        if layer_progress is not None:
            layer_progress(label, f"copying from {self.reference}", 0, blob.size)
        # A client of this thread's own: a registry client is not shared between threads.
        with base_source(self.reference, rules=self.rules) as source:
            how = copy_blob(
                source.client,
                source.repository,
                target.client,
                target.repository,
                blob.digest,
                blob.size,
            )
        if layer_progress is not None:
            layer_progress(label, how, blob.size, blob.size)
        if how != "present":
            progress(f"{target.name}: base layer {short_id(diff_id)} {how} from {self.reference}")
        return blob.size if how == "copied" else 0


def base_layers_of(
    labels: Mapping[str, str],
    diff_ids: tuple[str, ...],
    engine_rules: Callable[[], RegistryRules],
    progress: Progress,
    platform: Callable[[], Platform],
) -> BaseLayers | None:
    """The base's layers in its registry, when the labels name them there (a manifest, or an
    index holding one for the image's `platform`) and they are the image's first layers; None
    (the engine's export makes them) otherwise."""
    reference, digest = labels.get(LABEL_BASE_NAME, ""), labels.get(LABEL_BASE_DIGEST, "")
    if not reference or not digest:
        return None
    rules = rules_for(parse_reference(reference).domain or "docker.io", engine_rules)
    try:
        with base_source(reference, rules=rules) as source:
            manifest = source.manifest(digest)
            if manifest.is_index:
                wanted = platform()
                entry = next(
                    (
                        each
                        for each in manifest.entries()
                        if each.platform is not None
                        and not each.is_attestation
                        and wanted.matches(Platform.of(each.platform))
                    ),
                    None,
                )
                if entry is None:
                    progress(f"{reference}@{digest[:19]} has no {wanted} image: made anew")
                    return None
                manifest = source.manifest(entry.digest)
            config = source.config(manifest)
            layers = manifest.layers()
    except ShipitError as error:
        progress(f"the base's layers are not read from its registry: {error.one_line()}")
        return None
    rootfs = config.get("rootfs")
    base_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if (
        not isinstance(base_ids, list)
        or len(base_ids) != len(layers)
        or tuple(base_ids) != diff_ids[: len(base_ids)]
        or any(layer.media_type not in _GZIP_LAYERS for layer in layers)
    ):
        progress(f"the layers of {reference}@{digest[:19]} are not this image's")
        return None
    return BaseLayers(
        reference=reference,
        blobs={
            diff_id: BaseBlob(layer.digest, layer.size)
            for diff_id, layer in zip(base_ids, layers, strict=True)
        },
        rules=rules,
        config_digest=manifest.config_digest or "",
    )
