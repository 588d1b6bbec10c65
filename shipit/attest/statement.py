"""The in-toto Statement that every attestation shipit attaches is wrapped in.

One statement names the image it speaks of (its repository and digest) and carries one
predicate; cosign's `verify-attestation --type T` picks an attestation by `predicate_type`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipit.registries.manifest import canonical_json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# The predicate types cosign's `--type` names map to.
SPDX_DOCUMENT = "https://spdx.dev/Document"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"


@dataclass(frozen=True)
class Subject:
    name: str  # the repository, as cosign writes it (registry/repository, no tag)
    digest: str  # sha256:<hex>


@dataclass(frozen=True)
class Attestation:
    """One statement ready to be signed: its predicate type and its canonical bytes."""

    predicate_type: str
    statement: bytes


def statement(
    subjects: list[Subject], predicate_type: str, predicate: Mapping[str, Any]
) -> Attestation:
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": subject.name, "digest": {"sha256": subject.digest.removeprefix("sha256:")}}
            for subject in subjects
        ],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return Attestation(predicate_type, canonical_json(document))
