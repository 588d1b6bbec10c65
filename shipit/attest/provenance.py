"""SLSA provenance v1 (https://slsa.dev/provenance/v1, `cosign verify-attestation --type
slsaprovenance1`): which shipit built the image, from which commit and base images, with
which settings, and when.

Its buildType (statement.BUILD_TYPE_V1) is documented in docs/attestations.md: the
external parameters are the settings that shape the image (never a credential: no setting
that does is read here), the internal ones what shipit derived from them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipit import __version__
from shipit.attest.statement import BUILD_TYPE_V1, PROJECT_URL
from shipit.labels import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_IMAGE_ID,
    LABEL_BUILDER,
    LABEL_CREATED,
    LABEL_IMAGE,
    LABEL_REVISION,
    LABEL_VERSION,
)
from shipit.platforms import Platform
from shipit.vcs import is_full_sha

if TYPE_CHECKING:
    from shipit.pipeline import BuildResult

LABEL_SOURCE = "org.opencontainers.image.source"


@dataclass(frozen=True)
class PlatformBase:
    """The base image one platform's image was built on."""

    platform: str  # linux/amd64
    # The base's manifest digest in its registry (org.opencontainers.image.base.digest),
    # "" when the base was never pulled from one (a local or imported image).
    manifest_digest: str
    image_id: str  # the base's config digest, the classic image store's id of it


@dataclass(frozen=True)
class BuildFacts:
    """What the provenance says of one build; every field is known once the build ends."""

    image: str  # the image name (settings.image)
    base_image: str  # the base image reference the settings name
    platforms: tuple[PlatformBase, ...]
    tags: tuple[str, ...]  # the tags the image is pushed under
    build_id: str  # inputs.build_id_from: the digest of every input
    context_digest: str
    source_url: str  # vcs.source_url: the origin remote, without credentials
    commit: str  # the full commit id, "" when none is known
    dirty: bool
    created: str  # the image's time (source_date.py), RFC 3339
    builder: str  # who wrote the image: "shipit" or "docker build" (labels.LABEL_BUILDER)
    started_on: dt.datetime
    finished_on: dt.datetime


def facts_of_build(
    built: BuildResult, tags: Sequence[str], started_on: dt.datetime, finished_on: dt.datetime
) -> BuildFacts:
    """The facts of a build as its images' labels state them (the same whether this
    command built the image or found it unchanged): `tags` are the tags pushed, the times
    those of the command that built or found it."""
    images = [(each.platform, each.info) for each in built.platforms]
    if not images:
        info = built.info
        platform = Platform.of(
            {"os": info.os, "architecture": info.architecture, "variant": info.variant}
        )
        images = [(platform, info)]
    labels = built.info.labels
    commit = labels.get(LABEL_REVISION, "")
    return BuildFacts(
        image=labels.get(LABEL_IMAGE, built.image),
        base_image=built.base_image,
        platforms=tuple(
            PlatformBase(
                str(platform),
                info.labels.get(LABEL_BASE_DIGEST, ""),
                info.labels.get(LABEL_BASE_IMAGE_ID, ""),
            )
            for platform, info in images
        ),
        tags=tuple(tags),
        build_id=built.build_id,
        context_digest=built.context_digest,
        source_url=labels.get(LABEL_SOURCE, ""),
        commit=commit if is_full_sha(commit) else "",
        dirty=labels.get(LABEL_VERSION, "").endswith("-dirty"),
        created=labels.get(LABEL_CREATED, ""),
        builder=labels.get(LABEL_BUILDER, ""),
        started_on=started_on,
        finished_on=finished_on,
    )


def rfc3339(moment: dt.datetime) -> str:
    """UTC, whole seconds or not, with a Z, as SLSA's timestamps are written."""
    utc = moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return utc.isoformat().replace("+00:00", "Z")


def _source(facts: BuildFacts) -> dict[str, Any]:
    """The git source as SLSA's resource descriptors name one (SPDX's download location
    form, git+URL@COMMIT), digest gitCommit."""
    source: dict[str, Any] = {"name": "source"}
    if facts.source_url:
        url = facts.source_url
        source["uri"] = (url if url.startswith("git+") else f"git+{url}") + (
            f"@{facts.commit}" if facts.commit else ""
        )
    if facts.commit:
        source["digest"] = {"gitCommit": facts.commit}
    if facts.dirty:
        source["annotations"] = {"dirty": True}
    return source


def _base(facts: BuildFacts, base: PlatformBase) -> dict[str, Any]:
    digest = base.manifest_digest or base.image_id
    algorithm, _, hexdigits = digest.partition(":")
    descriptor: dict[str, Any] = {
        "name": f"base image {base.platform}",
        "uri": f"docker://{facts.base_image}",
        "digest": {algorithm: hexdigits},
        "annotations": {"platform": base.platform},
    }
    if base.manifest_digest:
        descriptor["annotations"]["configDigest"] = base.image_id
    else:
        # Not from a registry: its config's digest is all that names its content.
        descriptor["annotations"]["digestOf"] = "config"
    return descriptor


def slsa_provenance(facts: BuildFacts) -> dict[str, Any]:
    """The provenance predicate of the image of every platform in `facts`."""
    dependencies = [_source(facts)] if facts.source_url or facts.commit else []
    dependencies += [
        _base(facts, base)
        for base in sorted(facts.platforms, key=lambda each: each.platform)
        if base.manifest_digest or base.image_id
    ]
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE_V1,
            "externalParameters": {
                "image": facts.image,
                "baseImage": facts.base_image,
                "platforms": [base.platform for base in facts.platforms],
                "tags": list(facts.tags),
                "source": {"uri": facts.source_url, "commit": facts.commit},
            },
            "internalParameters": {
                "buildId": facts.build_id,
                "contextDigest": facts.context_digest,
                "created": facts.created,
                "builder": facts.builder,
                "dirty": facts.dirty,
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": PROJECT_URL, "version": {"shipit": __version__}},
            "metadata": {
                "invocationId": facts.build_id,
                "startedOn": rfc3339(facts.started_on),
                "finishedOn": rfc3339(facts.finished_on),
            },
        },
    }
