"""What a signed push attests, from what the command knows. A ship knows its build (the
`BuildResult`, when it started and ended, each image's package database read from its
running container): `attest.attestations_for` gives SLSA provenance, an SPDX SBOM per
platform and the smoke test per platform. A push of an earlier build knows its smoke passes:
it attests those.

The predicate types a digest gets are known before any statement is made (`types`), so a
push that finds its signatures in place renders nothing and reads no package database.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipit.attest.statement import (
    SLSA_PROVENANCE_V1,
    SMOKE_TEST_V1,
    SPDX_DOCUMENT,
    Attestation,
    Subject,
    statement,
)
from shipit.config import Settings

if TYPE_CHECKING:
    from shipit.attest.packages import PackageDatabase
    from shipit.attest.site_files import SiteFile
    from shipit.attest.smoke import SmokeRun
    from shipit.engine import Engine
    from shipit.pipeline import BuildResult


def read_packages(engine: Engine, container: str, image_id: str) -> PackageDatabase | None:
    """The image's package database (attest/packages.py), from its running `container` or
    the cache; None when neither has it or the engine cannot give it: the SBOM then lists
    the site and nginx's image without OS packages rather than fail the ship."""
    from shipit.attest.packages import package_database
    from shipit.errors import ShipitError

    try:
        return package_database(engine, container, image_id)
    except ShipitError:
        return None


@dataclass(frozen=True)
class PushedManifest:
    """One image manifest a push signs: its digest, the local image it is ("" for an image
    of the same build that an earlier run pushed), and its platform ("": the engine's)."""

    digest: str
    image_id: str
    platform: str = ""


@dataclass(frozen=True)
class ShipFacts:
    """What a ship knows of its build."""

    built: BuildResult
    started_on: dt.datetime
    finished_on: dt.datetime
    tags: tuple[str, ...]
    packages: Mapping[str, PackageDatabase | None]  # by image id


@dataclass
class Attesting:
    settings: Settings
    engine_platform: Callable[[], str]
    ship: ShipFacts | None = None
    _site_files: list[SiteFile] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _platform(self, manifest: PushedManifest) -> str:
        if manifest.platform:
            return manifest.platform
        if self.ship is not None:
            info = self.ship.built.info
            parts = (info.os, info.architecture, info.variant)
            return "/".join(part for part in parts if part)
        return self.engine_platform()

    def _smoke(self, manifest: PushedManifest) -> SmokeRun | None:
        from shipit.attest.smoke import earlier_smoke_run

        if not manifest.image_id:
            return None
        return earlier_smoke_run(self.settings, manifest.image_id, self._platform(manifest))

    def types(
        self, manifests: Sequence[PushedManifest], these: Sequence[PushedManifest]
    ) -> tuple[str, ...]:
        """The predicate types of the statements that name `these` digests."""
        found = [SLSA_PROVENANCE_V1, SPDX_DOCUMENT] if self.ship is not None else []
        if any(self._smoke(each) is not None for each in these):
            found.append(SMOKE_TEST_V1)
        return tuple(found)

    def _files(self) -> list[SiteFile]:
        from shipit.attest.site_files import every_site_file, rendered_site_of

        assert self.ship is not None
        with self._lock:
            if self._site_files is None:
                site = rendered_site_of(self.settings, self.ship.built)
                self._site_files = every_site_file(site)
            return self._site_files

    def attestations(
        self, repository: str, manifests: Sequence[PushedManifest], index_digest: str = ""
    ) -> list[Attestation]:
        """Every statement about these manifests (and the index) in `repository`."""
        from shipit.attest.smoke import smoke_predicate

        if self.ship is None:
            index = [Subject(repository, index_digest)] if index_digest else []
            found = []
            for each in manifests:
                run = self._smoke(each)
                if run is not None:
                    subjects = [Subject(repository, each.digest), *index]
                    predicate = smoke_predicate(run, each.digest)
                    found.append(statement(subjects, SMOKE_TEST_V1, predicate))
            return found
        return self._ship_attestations(repository, manifests, index_digest)

    def _ship_attestations(
        self, repository: str, manifests: Sequence[PushedManifest], index_digest: str
    ) -> list[Attestation]:
        from shipit.attest.attestations import AttestedImage, attestations_for
        from shipit.attest.provenance import facts_of_build
        from shipit.labels import LABEL_CREATED

        ship = self.ship
        assert ship is not None
        infos = {each.image_id: each.info for each in ship.built.platforms}
        infos.setdefault(ship.built.image_id, ship.built.info)
        images = [
            AttestedImage(
                platform=self._platform(each),
                digest=each.digest,
                created=infos[each.image_id].labels.get(LABEL_CREATED, "")
                if each.image_id in infos
                else "",
                packages=ship.packages.get(each.image_id),
                smoke=self._smoke(each),
            )
            for each in manifests
        ]
        facts = facts_of_build(ship.built, ship.tags, ship.started_on, ship.finished_on)
        return attestations_for(repository, facts, images, self._files(), index_digest)
