"""What cosign stores beside an image, as cosign 2 writes and reads it (its specs
SIGNATURE_SPEC.md and ATTESTATION_SPEC.md): pure data, no registry and no key.

- The signature of image D: an OCI manifest under the tag `sha256-<hex of D>.sig` in the
  image's repository; each layer is one signature, its blob the "simple signing" payload
  (JSON naming D), its annotation `dev.cosignproject.cosign/signature` the base64 ECDSA
  signature of that blob.
- Its attestations: an OCI manifest under `sha256-<hex>.att`; each layer is a DSSE envelope
  around one in-toto statement, signed over the envelope's PAE, with the statement's
  predicate type in the layer's `predicateType` annotation.

shipit also names, in the signed payload's `optional` object, the predicate types it attached
before it signed: a later push of the same digest that would attach the same ones finds the
signature and has nothing to read or upload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipit.digests import sha256_digest
from shipit.registries.manifest import OCI_MANIFEST, Manifest, canonical_json

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_TYPE_ANNOTATION = "predicateType"
SIGNATURE_TYPE = "cosign container image signature"
# The `optional` key of the signed payload listing the attached predicate types.
ATTESTED_TYPES = "dev.shipit.attestations"


def _tag(digest: str, suffix: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.{suffix}"


def signature_tag(digest: str) -> str:
    return _tag(digest, "sig")


def attestation_tag(digest: str) -> str:
    return _tag(digest, "att")


def simple_signing_payload(repository: str, digest: str, attested: Iterable[str] = ()) -> bytes:
    """The payload cosign signs for `digest` in `repository` (registry/repository, no tag)."""
    types = sorted(set(attested))
    document = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": {ATTESTED_TYPES: " ".join(types)} if types else None,
    }
    return canonical_json(document)


def signed_digest(payload: bytes) -> str | None:
    """The image digest a simple signing payload names; None when it is not one."""
    try:
        document = json.loads(payload)
        critical = document["critical"]
        if critical.get("type") != SIGNATURE_TYPE:
            return None
        return str(critical["image"]["docker-manifest-digest"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def attested_types(payload: bytes) -> tuple[str, ...]:
    try:
        optional = json.loads(payload).get("optional") or {}
        return tuple(str(optional.get(ATTESTED_TYPES, "")).split())
    except (ValueError, AttributeError):
        return ()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes an envelope's signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(statement: bytes, signature_b64: str) -> bytes:
    import base64

    document = {
        "payloadType": IN_TOTO,
        "payload": base64.b64encode(statement).decode("ascii"),
        "signatures": [{"keyid": "", "sig": signature_b64}],
    }
    return canonical_json(document)


@dataclass(frozen=True)
class Layer:
    """One signature or attestation: its blob and its descriptor's media type and annotations."""

    media_type: str
    blob: bytes
    annotations: Mapping[str, str]

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "size": len(self.blob),
            "digest": self.digest,
            "annotations": dict(self.annotations),
        }


def config_blob(layer_digests: Iterable[str]) -> bytes:
    """The image config of a signature or attestation manifest, as cosign writes it: no
    platform, no command, the layers as its diff ids (they are stored uncompressed)."""
    document = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
    }
    return canonical_json(document)


def layers_manifest(config: bytes, layers: Iterable[Mapping[str, Any]]) -> Manifest:
    """The OCI manifest of a signature or attestation tag: `config`, then the descriptors."""
    content = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256_digest(config)},
        "layers": [dict(layer) for layer in layers],
    }
    raw = canonical_json(content)
    return Manifest(
        digest=sha256_digest(raw), media_type=OCI_MANIFEST, content=json.loads(raw), raw=raw
    )
