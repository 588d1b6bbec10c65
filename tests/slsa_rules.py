"""The field rules of SLSA provenance v1 (slsa.dev/spec/v1.0/provenance, and the in-toto
ResourceDescriptor and DigestSet it uses) that can be checked without knowing the buildType:
written here from the specification, apart from the code that writes the provenance."""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from typing import Any

# Lengths of the hex digests the in-toto DigestSet names (gitCommit: SHA-1 or SHA-256).
_HEX_LENGTHS = {"sha256": (64,), "sha512": (128,), "sha1": (40,), "gitCommit": (40, 64)}
_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def _is_uri(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return bool(urllib.parse.urlsplit(value).scheme)


def _digest_problems(where: str, digest: object) -> list[str]:
    if not isinstance(digest, dict) or not digest:
        return [f"{where}.digest is not a non-empty map"]
    problems = []
    for algorithm, value in digest.items():
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]+", value):
            problems.append(f"{where}.digest.{algorithm} is not lowercase hex")
        elif algorithm in _HEX_LENGTHS and len(value) not in _HEX_LENGTHS[algorithm]:
            problems.append(f"{where}.digest.{algorithm} has {len(value)} hex digits")
    return problems


def _descriptor_problems(where: str, descriptor: object) -> list[str]:
    if not isinstance(descriptor, dict):
        return [f"{where} is not an object"]
    if not ({"uri", "digest", "content"} & descriptor.keys()):
        return [f"{where} has none of uri, digest, content"]
    problems = []
    if "uri" in descriptor and not _is_uri(descriptor["uri"]):
        problems.append(f"{where}.uri is not a URI")
    if "digest" in descriptor:
        problems += _digest_problems(where, descriptor["digest"])
    return problems


def provenance_problems(predicate: Any) -> list[str]:
    """Every broken rule, [] for a valid predicate."""
    if not isinstance(predicate, dict):
        return ["the predicate is not an object"]
    problems: list[str] = []
    definition = predicate.get("buildDefinition")
    run = predicate.get("runDetails")
    if not isinstance(definition, dict):
        return ["buildDefinition is missing"]
    if not isinstance(run, dict):
        return ["runDetails is missing"]
    if not _is_uri(definition.get("buildType")):
        problems.append("buildDefinition.buildType is not a URI")
    if not isinstance(definition.get("externalParameters"), dict):
        problems.append("buildDefinition.externalParameters is not an object")
    if "internalParameters" in definition and not isinstance(
        definition["internalParameters"], dict
    ):
        problems.append("buildDefinition.internalParameters is not an object")
    for number, dependency in enumerate(definition.get("resolvedDependencies") or ()):
        problems += _descriptor_problems(f"resolvedDependencies[{number}]", dependency)
    builder = run.get("builder")
    if not isinstance(builder, dict) or not _is_uri(builder.get("id")):
        problems.append("runDetails.builder.id is not a URI")
    elif not all(isinstance(value, str) for value in (builder.get("version") or {}).values()):
        problems.append("runDetails.builder.version is not a map of strings")
    metadata = run.get("metadata") or {}
    for field in ("startedOn", "finishedOn"):
        if field in metadata and not _RFC3339_UTC.match(str(metadata[field])):
            problems.append(f"runDetails.metadata.{field} is not an RFC 3339 UTC time")
    if "startedOn" in metadata and "finishedOn" in metadata and not problems:
        started = dt.datetime.fromisoformat(metadata["startedOn"])
        if dt.datetime.fromisoformat(metadata["finishedOn"]) < started:
            problems.append("runDetails.metadata.finishedOn is before startedOn")
    return problems
