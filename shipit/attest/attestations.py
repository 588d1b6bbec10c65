"""The one entry point of the signing side: every attestation of a pushed image, as
in-toto statements ready to be signed, each naming the digests it is to be attached to.

    attestations_for(repository, build, images, site_files, index_digest="")

gives the SLSA provenance (one statement for the whole image: the index and every
platform's manifest), then for each platform its SPDX SBOM and, when its container ran
here, its smoke-test attestation (each naming that platform's manifest, and the index when
there is one, so that `cosign verify-attestation` of either finds it). Pure: no engine, no
registry, no key; the same arguments give the same bytes.

Its arguments come from what a ship has:
- `build`: provenance.facts_of_build(BuildResult, pushed tags, started, finished);
- each image's `packages`: packages.package_database(engine, container id, image id), right
  after its container started (beside the smoke test), or with "" for no container when the
  smoke pass was reused (the cache has it);
- each image's `smoke`: a SmokeRun of its RunResult's report, or smoke.earlier_smoke_run;
- `site_files`: site_files.every_site_file(site), the site from the build, or for an image
  found unchanged site_files.rendered_site_of(settings, build).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shipit.attest.packages import PackageDatabase
from shipit.attest.provenance import BuildFacts, slsa_provenance
from shipit.attest.sbom import spdx_sbom
from shipit.attest.site_files import SiteFile
from shipit.attest.smoke import SmokeRun, smoke_predicate
from shipit.attest.statement import (
    SLSA_PROVENANCE_V1,
    SMOKE_TEST_V1,
    SPDX_DOCUMENT,
    Attestation,
    Subject,
    statement,
)


@dataclass(frozen=True)
class AttestedImage:
    """One platform's image as pushed."""

    platform: str  # linux/amd64
    digest: str  # its manifest's digest in the registries
    created: str  # its org.opencontainers.image.created label (RFC 3339)
    packages: PackageDatabase | None  # attest/packages.package_database; None: none found
    smoke: SmokeRun | None  # None when no container of it ran in this command


def attestations_for(
    repository: str,
    build: BuildFacts,
    images: Sequence[AttestedImage],
    site_files: Sequence[SiteFile],
    index_digest: str = "",
) -> list[Attestation]:
    """`repository` is the statements' subject name (registry/repository, as cosign
    writes it); `index_digest` the OCI index's digest of a multi-platform image."""
    index = [Subject(repository, index_digest)] if index_digest else []
    ordered = sorted(images, key=lambda image: image.platform)
    everything = index + [Subject(repository, image.digest) for image in ordered]
    found = [statement(everything, SLSA_PROVENANCE_V1, slsa_provenance(build))]
    for image in ordered:
        subjects = [Subject(repository, image.digest), *index]
        packages = image.packages.packages() if image.packages is not None else ()
        sbom = spdx_sbom(
            image.digest,
            image.platform,
            packages,
            site_files,
            image.created,
            image_name=build.image,
        )
        found.append(statement(subjects, SPDX_DOCUMENT, sbom))
        if image.smoke is not None:
            smoke = smoke_predicate(image.smoke, image.digest)
            found.append(statement(subjects, SMOKE_TEST_V1, smoke))
    return found
