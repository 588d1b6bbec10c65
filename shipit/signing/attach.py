"""Signs one pushed digest in one registry and attaches its attestations, as cosign does
(layout.py), before any tag names the image: the push calls this between the manifest's
upload by digest and the first tag.

Nothing is signed or uploaded twice: a signature tag that already holds this key's signature
of a payload naming this digest and the same predicate types means the attestations were
attached before it (they always go first), so one manifest GET is all a no-change push
costs. Otherwise each statement this key already attested for the digest (the same
predicate type about the same digests) is kept, the missing ones are added to the
attestation manifest, and the signature is added to the signature manifest; signatures and
attestations of other keys stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shipit.attest.statement import Attestation
from shipit.errors import SigningError
from shipit.progress import Progress, quiet
from shipit.registries.errors import RegistryAuthError, RegistryResponseError
from shipit.registries.manifest import Descriptor, Manifest
from shipit.registries.registry import Target
from shipit.signing.checks import (
    signature_verifies,
    statement_key,
    statement_names,
    verified_statement,
)
from shipit.signing.ecdsa import b64
from shipit.signing.keys import Signer
from shipit.signing.layout import (
    DSSE_ENVELOPE,
    IN_TOTO,
    PREDICATE_TYPE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    Layer,
    attestation_tag,
    config_blob,
    envelope,
    layers_manifest,
    pae,
    signature_tag,
    simple_signing_payload,
)

# A stored envelope larger than this is not read (an SBOM of a large site is some MB).
_ENVELOPE_LIMIT = 64 * 1024 * 1024
# Blob uploads at once per registry and digest: an envelope, a config, a signature.
_UPLOADS = 4
# How registries refuse a manifest they will not store (a read-only repository, a policy).
_REFUSALS = frozenset({400, 403, 404, 405, 409})


@dataclass(frozen=True)
class Attached:
    """What one registry now holds for one digest, and what this push added."""

    digest: str
    signed: bool  # a signature was uploaded (False: this key's was there)
    attested: tuple[str, ...]  # predicate types uploaded now

    def to_json(self) -> dict[str, object]:
        return {"digest": self.digest, "signed": self.signed, "attested": list(self.attested)}


def _existing_layers(manifest: Manifest | None) -> list[Descriptor]:
    if manifest is None:
        return []
    try:
        return list(manifest.layers())
    except Exception:  # noqa: BLE001 - an unreadable signature manifest is replaced
        return []


def _attested_here(
    target: Target, layers: list[Descriptor], digest: str, signer: Signer
) -> set[tuple[str, tuple[str, ...]]]:
    """What this key attested for `digest` in the stored manifest: each statement's
    predicate type and the digests it names (an index holds one SBOM per platform)."""
    found = set()
    for layer in layers:
        kind = (layer.annotations or {}).get(PREDICATE_TYPE_ANNOTATION, "")
        if layer.media_type != DSSE_ENVELOPE or not kind:
            continue
        blob = target.client.read_blob(
            target.repository, layer.digest, _ENVELOPE_LIMIT, size=layer.size
        )
        statement = verified_statement(blob, signer.public_key)
        if statement is not None and statement_names(statement, digest):
            found.add(statement_key(statement))
    return found


def _upload(target: Target, blob: bytes) -> None:
    """Uploads a small blob without asking first: an envelope carries a fresh signature, so a
    HEAD would miss, and a registry keeps one copy of a blob uploaded twice."""
    from shipit.digests import sha256_digest

    target.client.upload_small_blob(target.repository, sha256_digest(blob), blob)


@dataclass(frozen=True)
class _Tagged:
    """A signature or attestation manifest to store under `tag`, and the blobs it names
    that the registry does not hold yet."""

    tag: str
    blobs: tuple[bytes, ...]
    manifest: Manifest


def _tagged(tag: str, kept: list[Descriptor], added: list[Layer]) -> _Tagged:
    """The manifest of `kept` layers (already in the registry) and `added` ones."""
    descriptors = [each.to_json() for each in kept] + [layer.descriptor() for layer in added]
    config = config_blob(str(each["digest"]) for each in descriptors)
    blobs = (*(layer.blob for layer in added), config)
    return _Tagged(tag, blobs, layers_manifest(config, descriptors))


def _store(target: Target, manifests: Sequence[_Tagged]) -> None:
    """Uploads every blob at once (small ones: the round trips are the cost), then puts the
    manifests in the order given: the attestations before the signature that says they are
    there."""
    blobs = [blob for each in manifests for blob in each.blobs]
    with ThreadPoolExecutor(max_workers=_UPLOADS, thread_name_prefix="sign") as pool:
        list(pool.map(lambda blob: _upload(target, blob), blobs))
    for each in manifests:
        _put(target, each.tag, each.manifest)


def _put(target: Target, tag: str, manifest: Manifest) -> None:
    try:
        target.client.put_manifest(target.repository, tag, manifest)
    except (RegistryResponseError, RegistryAuthError) as error:
        # The image's own manifest went in with the same credentials just before: a 403 here
        # is the registry refusing this tag (a policy, a tag rule), not a wrong login.
        if error.status not in _REFUSALS:
            raise
        raise SigningError(
            f"{target.name} refused {target.reference}:{tag}: "
            f"{error.registry_message or error.message}",
            "let the push write tags of the form sha256-<hex>.sig and .att (a mutable "
            "repository, or one whose policy allows them); no tag was moved",
        ) from error


def attach(
    target: Target,
    digest: str,
    signer: Signer,
    attestations: Sequence[Attestation] | Callable[[], Sequence[Attestation]],
    progress: Progress = quiet,
    *,
    types: Sequence[str] | None = None,
) -> Attached:
    """Signs `digest` in `target`'s repository and attaches `attestations` (each a statement
    about `digest`), unless this key did so already. `attestations` may be a function that
    makes them, with `types` their predicate types: then a digest signed already costs no
    SBOM or provenance."""
    if types is None:
        assert not callable(attestations)
        types = [each.predicate_type for each in attestations]
    types = sorted(set(types))
    payload = simple_signing_payload(target.reference, digest, types)
    signatures = target.client.find_manifest(target.repository, signature_tag(digest))
    signature_layers = _existing_layers(signatures)
    if any(signature_verifies(layer, payload, signer.public_key) for layer in signature_layers):
        progress(f"{target.name}: {digest[:19]} is signed by this key already")
        return Attached(digest, signed=False, attested=())
    added: list[Layer] = []
    manifests: list[_Tagged] = []
    if callable(attestations):
        attestations = attestations() if types else ()
    if attestations:
        stored = _existing_layers(
            target.client.find_manifest(target.repository, attestation_tag(digest))
        )
        present = _attested_here(target, stored, digest, signer)
        for attestation in attestations:
            key = statement_key(attestation.statement)
            if key in present:
                continue
            present.add(key)
            signed = signer.sign(pae(IN_TOTO, attestation.statement))
            added.append(
                Layer(
                    DSSE_ENVELOPE,
                    envelope(attestation.statement, b64(signed)),
                    {
                        SIGNATURE_ANNOTATION: "",
                        PREDICATE_TYPE_ANNOTATION: attestation.predicate_type,
                    },
                )
            )
        if added:
            manifests.append(_tagged(attestation_tag(digest), stored, added))
    signature = Layer(SIMPLE_SIGNING, payload, {SIGNATURE_ANNOTATION: b64(signer.sign(payload))})
    kept = [layer for layer in signature_layers if layer.digest != signature.digest]
    manifests.append(_tagged(signature_tag(digest), kept, [signature]))
    _store(target, manifests)
    attested = tuple(layer.annotations[PREDICATE_TYPE_ANNOTATION] for layer in added)
    progress(
        f"{target.name}: signed {digest[:19]}"
        + (f" and attached {', '.join(attested)}" if attested else "")
    )
    return Attached(digest, signed=True, attested=attested)
