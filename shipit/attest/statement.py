"""The in-toto Statement that every attestation shipit attaches is wrapped in.

One statement names the images it speaks of (their repository and digest) and carries one
predicate; cosign's `verify-attestation --type T` picks an attestation by `predicate_type`.
The type URIs of shipit's own documents point at docs/attestations.md, which describes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipit.registries.manifest import canonical_json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# The predicate types cosign's `--type` names map to (spdxjson, slsaprovenance1).
SPDX_DOCUMENT = "https://spdx.dev/Document"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
# shipit's own URIs: where the project is, and the documents it defines there.
PROJECT_URL = "https://github.com/shipit-site/shipit-site"
_DOCUMENTED = f"{PROJECT_URL}/blob/main/docs/attestations.md"
SMOKE_TEST_V1 = f"{_DOCUMENTED}#smoke-test-v1"
BUILD_TYPE_V1 = f"{_DOCUMENTED}#build-type-v1"


@dataclass(frozen=True)
class Subject:
    name: str  # the repository, as cosign writes it (registry/repository, no tag)
    digest: str  # sha256:<hex>


@dataclass(frozen=True)
class Attestation:
    """One statement ready to be signed: its predicate type and its canonical bytes, and
    the images it names (each digest is one the signature is attached to)."""

    predicate_type: str
    statement: bytes
    subjects: tuple[Subject, ...] = ()


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
    return Attestation(predicate_type, canonical_json(document), tuple(subjects))
