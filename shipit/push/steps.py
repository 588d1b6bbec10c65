"""One registry's part of a push: the first tag by the engine, every other tag by a manifest
PUT, each verified.

The first tag (the first fixed one, {sha} by default): a tag that already holds this very
image is skipped without uploading. An image that shipit wrote itself is the same bytes
whenever and wherever the same commit is built (shipit/source_date.py), so that is all a
re-run on a fresh machine needs: the manifest names the image, and no config is read. An
image that `docker build` made carries its build's time, so a re-run makes another one: a
tag that holds an image built from the same input by an earlier run is skipped too (replacing
it would change a published digest and upload the site again), which reads its config.
Otherwise the engine pushes it (its stream is read to its end), or shipit uploads it itself
where it is faster (shipit/push/upload.py); the digest reported must be what the registry
serves, which must be this image.

Every other tag: one manifest PUT of the exact bytes the registry serves under the first tag
(a second engine push would check every layer and upload the manifest again), or none when
the tag already serves that digest. A fixed tag that holds another image in an immutable
repository is a conflict; a moving tag there (`latest`) is held back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shipit.digests import short_id
from shipit.engine import Engine
from shipit.errors import AuthError, PushError, PushStreamError, ShipitError, TagConflictError
from shipit.iam.refusal import refused_action, refused_ecr_request
from shipit.progress import LayerProgress, Progress
from shipit.push.image import PushImage
from shipit.push.image_blobs import ImageBlobs
from shipit.push.index_upload import serves_this_index, upload_index
from shipit.push.report import TagOutcome
from shipit.push.targets import Target
from shipit.push.upload import put_manifest, upload_image
from shipit.push_stream import classify_stream_error
from shipit.registries.distribution import RegistryClient
from shipit.registries.errors import RegistryResponseError
from shipit.registries.manifest import Manifest

if TYPE_CHECKING:
    from shipit.signing.image_signing import ImageSigning

# How registries word a refused overwrite of an existing tag (ECR: 400 TAG_INVALID "... already
# exists ... cannot be overwritten because the tag is immutable"; others: 409 TAG_IMMUTABLE).
_TAG_CONFLICT_WORDS = ("immutable", "cannot be overwritten", "already exists")


def _served(client: RegistryClient, repository: str, tag: str) -> Manifest | None:
    try:
        return client.get_manifest(repository, tag)
    except RegistryResponseError as error:
        if error.status == 404:
            return None
        raise


def uploaded_bytes(manifest: Manifest, image: PushImage, pushed_layers: set[str]) -> int:
    """Compressed bytes of the layers this push uploaded. The classic store's stream names
    layers by short diff id (the manifest lists layers in diff-id order), the containerd
    store's by short blob digest."""
    layers = manifest.content.get("layers") or []
    uploaded = 0
    for index, layer in enumerate(layers):
        names = {short_id(str(layer.get("digest", "")))}
        if index < len(image.layers):
            names.add(short_id(image.layers[index]))
        if names & pushed_layers:
            uploaded += int(layer.get("size", 0))
    return uploaded


def _credentials_work(client: RegistryClient) -> bool:
    try:
        client.ping()
    except ShipitError:
        return False
    return True


def _signed_index(target: Target, image: PushImage, index: Manifest, signing: ImageSigning) -> None:
    """Signs each platform's manifest of the index, then the index."""
    from shipit.signing.ship_attestations import PushedManifest

    by_platform = {str(each.platform): each for each in image.platforms}
    manifests = [
        PushedManifest(entry.digest, by_platform[entry.platform_name].id, entry.platform_name)
        for entry in index.entries()
        if entry.platform_name in by_platform
    ]
    signing.sign(target, manifests, index.digest)


def _signed(target: Target, digest: str, image_id: str, signing: ImageSigning) -> None:
    """Signs one image's manifest (`image_id` "": not this image, so without its smoke test)."""
    from shipit.signing.ship_attestations import PushedManifest

    signing.sign(target, [PushedManifest(digest, image_id)])


def _already_there(
    target: Target, image: PushImage, served: Manifest, progress: Progress
) -> TagOutcome | None:
    """The outcome when the tag needs no push, None when it does; an immutable tag holding
    another image is an error."""
    reference = f"{target.reference}:{image.first_tag}"
    if image.is_served_by(served):
        progress(f"{target.name}: {reference} already holds this image; nothing to upload")
        return TagOutcome(image.first_tag, "unchanged", digest=served.digest)
    if (
        not image.reproducible
        and not served.is_index
        and image.same_build_as(target.client.image_config(target.repository, served))
    ):
        progress(
            f"{target.name}: {reference} already holds {served.digest[:19]}, built from the "
            f"same input (build id {image.build_id}); keeping it"
        )
        return TagOutcome(image.first_tag, "unchanged", digest=served.digest)
    if target.mutability == "IMMUTABLE":
        raise TagConflictError(
            f"{reference} already holds another image ({served.digest[:19]}) and the "
            "repository's tags are immutable"
        )
    return None


def _stream_refusal(target: Target, reference: str, text: str) -> tuple[ShipitError, bool]:
    """The error a refused engine push stands for, and whether it names an IAM action: in
    ECR's words (the classic image store streams them), or, for ECR, after the request the
    containerd image store says was refused."""
    refusal = classify_stream_error(text, reference, target.registry.auth_hint)
    if refused_action(text) is not None:
        return refusal, True
    inferred = refused_ecr_request(text) if target.registry.names_iam_actions else None
    if inferred is None:
        return refusal, False
    described = f"push of {reference} was refused ({inferred.describe()}): {text}"
    return AuthError(described, inferred.hint()), True


def push_first_tag_once(
    engine: Engine,
    target: Target,
    image: PushImage,
    progress: Progress,
    layer_progress: LayerProgress | None = None,
    blobs: Callable[[], ImageBlobs | None] | None = None,
    blobs_of: Callable[[str], ImageBlobs | None] | None = None,
    signing: ImageSigning | None = None,
) -> tuple[TagOutcome, Manifest]:
    """The first tag's outcome, and the manifest the registry now serves under it (with its
    exact bytes, which every other tag is then pointed at). When `blobs` gives the image's
    blobs, shipit uploads the image itself; otherwise the engine pushes it. An image of
    several platforms is an index, which shipit uploads itself (`blobs_of` an image id).

    With `signing`, shipit's own upload puts the manifest by digest, signs it and attaches
    its attestations, and only then tags it; an image already there is signed if this key
    has not signed it yet. The engine pushes under the tag: on the containerd image store the
    digest it will push is the image's id, which is signed before the push; on the classic
    store, whose engine compresses the layers as it pushes, the signature follows the first
    tag (before any other tag moves)."""
    if image.platforms:
        return _push_index_once(target, image, progress, layer_progress, blobs_of, signing)
    tag = image.first_tag
    reference = f"{target.reference}:{tag}"
    client = target.client
    served = _served(client, target.repository, tag)
    if served is not None:
        outcome = _already_there(target, image, served, progress)
        if outcome is not None:
            if signing is not None:
                # An image of the same build that an earlier run pushed is signed as it is,
                # without this image's smoke test: that pass is of another image.
                ran = image.id if image.is_served_by(served) else ""
                _signed(target, served.digest, ran, signing)
            return outcome, served
    progress(f"{target.name}: pushing {reference}")
    image_blobs = None if blobs is None else blobs()
    if image_blobs is not None:
        manifest, uploaded = upload_image(
            target, image, image_blobs, progress, layer_progress, by_digest=signing is not None
        )
        digest = manifest.digest
        if signing is not None:
            _signed(target, digest, image.id, signing)
            put_manifest(target, tag, manifest)
        served = _verified(target, image, digest)
        return TagOutcome(tag, "pushed", digest=digest, bytes_uploaded=uploaded), served
    presigned = ""
    if signing is not None and engine.image_store() != "classic":
        _signed(target, image.id, image.id, signing)
        presigned = image.id
    engine.tag(image.id, target.reference, tag)
    try:
        stream = engine.push(
            target.reference,
            tag,
            target.login.auth_config(),
            lambda line: progress(f"{target.name}: {line}"),
            None
            if layer_progress is None
            else lambda layer, *state: layer_progress(f"{target.name} {layer}", *state),
        )
    finally:
        # The registry-named tag only exists for the push: nothing is left behind.
        engine.untag(reference)
    if stream.error:
        refusal, names_action = _stream_refusal(target, reference, stream.error)
        if type(refusal) is AuthError and not names_action and _credentials_work(client):
            # The engine drops the credentials when its own /v2/ ping fails (a 503, a
            # reset) and then reports "unauthorized": a fault, not a wrong token. A refusal
            # of an IAM action is ECR's verdict, which the /v2/ ping (token only) cannot see.
            raise PushStreamError(
                f"push of {reference} failed after a registry fault: {stream.error}",
                transient=True,
            ) from refusal
        raise refusal
    if not stream.digest:
        raise PushStreamError(f"push of {reference} ended without a digest", transient=True)
    served = _verified(target, image, stream.digest)
    if signing is not None and served.digest != presigned:
        _signed(target, served.digest, image.id, signing)
    uploaded = uploaded_bytes(served, image, stream.pushed_layers)
    return TagOutcome(tag, "pushed", digest=stream.digest, bytes_uploaded=uploaded), served


def _push_index_once(
    target: Target,
    image: PushImage,
    progress: Progress,
    layer_progress: LayerProgress | None,
    blobs_of: Callable[[str], ImageBlobs | None] | None,
    signing: ImageSigning | None,
) -> tuple[TagOutcome, Manifest]:
    tag = image.first_tag
    reference = f"{target.reference}:{tag}"
    served = _served(target.client, target.repository, tag)
    if served is not None:
        if serves_this_index(target, image, served):
            progress(f"{target.name}: {reference} already holds this image; nothing to upload")
            if signing is not None:
                _signed_index(target, image, served, signing)
            return TagOutcome(tag, "unchanged", digest=served.digest), served
        if target.mutability == "IMMUTABLE":
            raise TagConflictError(
                f"{reference} already holds another image ({served.digest[:19]}) and the "
                "repository's tags are immutable"
            )
    primary = None if blobs_of is None else blobs_of(image.id)
    if blobs_of is None or primary is None:
        raise PushError(
            f"{reference}: an image of several platforms is uploaded by shipit itself, which "
            'needs a local engine and uploader = "auto"',
            "push one platform at a time (--platform), or ship from such an engine",
        )
    found = blobs_of

    def blobs_for(image_id: str) -> ImageBlobs:
        blobs = found(image_id)
        assert blobs is not None  # the engine uploads none or all
        return blobs

    progress(f"{target.name}: pushing {reference} ({len(image.platforms)} platforms)")
    index, uploaded = upload_index(
        target,
        image,
        blobs_for,
        progress,
        layer_progress,
        before_tag=None
        if signing is None
        else lambda index: _signed_index(target, image, index, signing),
    )
    served = _served(target.client, target.repository, tag)
    if served is None or served.digest != index.digest:
        raise PushError(
            f"{reference}: the registry serves {served.digest if served else 'nothing'}, "
            f"but the push wrote the index {index.digest}",
            "something else wrote the tag meanwhile; push again",
        )
    return TagOutcome(tag, "pushed", digest=index.digest, bytes_uploaded=uploaded), served


def _verified(target: Target, image: PushImage, digest: str) -> Manifest:
    """What the registry serves under the first tag, which must be the pushed digest and
    this image."""
    reference = f"{target.reference}:{image.first_tag}"
    served = _served(target.client, target.repository, image.first_tag)
    if served is None or served.digest != digest:
        raise PushError(
            f"{reference}: the registry serves {served.digest if served else 'nothing'}, "
            f"but the push reported {digest}",
            "something else wrote the tag meanwhile; push again",
        )
    if not image.is_served_by(served):
        raise PushError(
            f"{reference}: the registry serves {served.digest} with config "
            f"{served.config_digest}, neither of which is the local image {image.id}",
            "push again; if it persists the registry rewrote the manifest",
        )
    return served


def is_tag_conflict(error: RegistryResponseError) -> bool:
    if error.status == 409 or error.code == "TAG_IMMUTABLE":
        return True
    lowered = error.registry_message.lower()
    return error.status == 400 and any(words in lowered for words in _TAG_CONFLICT_WORDS)


def point_tag_once(
    target: Target, tag: str, manifest: Manifest, progress: Progress, *, moving: bool
) -> TagOutcome:
    """Points `tag` at `manifest` (what the first tag serves). A status of "held-back" means a
    moving tag in an immutable repository already holds another image."""
    reference = f"{target.reference}:{tag}"
    digest = manifest.digest
    client = target.client
    # A GET, not a HEAD: a refusal's body says why (an expired token, the IAM action).
    served = _served(client, target.repository, tag)
    if served is not None and served.digest == digest:
        progress(f"{target.name}: {reference} already holds this image")
        return TagOutcome(tag, "unchanged", digest=digest)
    if served is not None and target.mutability == "IMMUTABLE":
        if moving:
            return TagOutcome(tag, "held-back")
        raise TagConflictError(
            f"{reference} already holds another image ({served.digest[:19]}) and the "
            "repository's tags are immutable"
        )
    if manifest.raw_digest != digest:
        raise PushError(
            f"{target.reference}: the manifest served for the first tag hashes to "
            f"{manifest.raw_digest}, not to its digest {digest}",
            "push again; if it persists the registry rewrites manifests",
        )
    progress(f"{target.name}: pointing {reference} at {digest[:19]}")
    try:
        answered = client.put_manifest(target.repository, tag, manifest)
    except RegistryResponseError as error:
        if is_tag_conflict(error):
            raise TagConflictError(
                f"{reference} cannot be moved: {error.registry_message or error.message}",
                target.registry.immutable_tag_hint(),
            ) from error
        raise
    if not answered:
        # Docker-Content-Digest is optional for a PUT in the OCI spec: ask what the tag is.
        answered = client.manifest_digest(target.repository, tag) or ""
    if answered != digest:
        raise PushError(
            f"{reference}: the registry stored the manifest as {answered or 'no digest'}, "
            f"not as {digest}",
            "push again; if it persists the registry rewrites manifests",
        )
    return TagOutcome(tag, "pushed", digest=digest)
