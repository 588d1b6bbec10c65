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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipit.attest import statement as intoto
from shipit.attest.statement import Attestation
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


class PackageReads:
    """Each image's package database, read while its container runs. A ship runs one
    container at a time: the database of each but the last is read before the next run
    replaces its container; the last one's in the background, as the push starts, and the
    container's removal waits for it (`wait`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._found: dict[str, PackageDatabase | None] = {}
        self._pending: tuple[str, str] | None = None
        self._reading: threading.Thread | None = None

    def ran(self, container: str, image_id: str) -> None:
        """An image's container runs (`container` "": a reused pass, from the cache)."""
        self.before_next_run()
        self._pending = (container, image_id)

    def before_next_run(self) -> None:
        if self._pending is not None:
            container, image_id = self._pending
            self._pending = None
            self._found[image_id] = read_packages(self._engine, container, image_id)

    def in_background(self) -> None:
        if self._pending is None:
            return
        self._reading = threading.Thread(target=self.before_next_run, daemon=True)
        self._reading.start()

    def wait(self) -> None:
        if self._reading is not None:
            self._reading.join()

    def packages(self) -> dict[str, PackageDatabase | None]:
        self.wait()
        return dict(self._found)


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
    packages: PackageReads


@dataclass
class Attesting:
    settings: Settings
    engine_platform: Callable[[], str]
    ship: ShipFacts | None = None
    _site_files: Future[list[SiteFile]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def shipped(self, facts: ShipFacts) -> None:
        """The ship's build is known. A new image is signed nowhere yet: its site's files
        (rendered again, each file's SHA-1) are read from now on, in the background, while
        the push uploads it. An unchanged one is most likely signed: read only if asked."""
        self.ship = facts
        if facts.built.built:
            self._start_reading_files()

    def _start_reading_files(self) -> Future[list[SiteFile]]:
        with self._lock:
            if self._site_files is None:
                assert self.ship is not None
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attest")
                self._site_files = pool.submit(self._read_files, self.ship)
                pool.shutdown(wait=False)
            return self._site_files

    def _read_files(self, facts: ShipFacts) -> list[SiteFile]:
        from shipit.attest.site_files import every_site_file, rendered_site_of

        return every_site_file(rendered_site_of(self.settings, facts.built))

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
        found = [intoto.SLSA_PROVENANCE_V1, intoto.SPDX_DOCUMENT] if self.ship is not None else []
        if any(self._smoke(each) is not None for each in these):
            found.append(intoto.SMOKE_TEST_V1)
        return tuple(found)

    def _files(self) -> list[SiteFile]:
        return self._start_reading_files().result()

    def attestations(
        self, repository: str, manifests: Sequence[PushedManifest], index_digest: str = ""
    ) -> list[Attestation]:
        """Every statement about these manifests (and the index) in `repository`."""
        from shipit.attest.smoke import smoke_predicate

        if self.ship is None:
            index = [intoto.Subject(repository, index_digest)] if index_digest else []
            found = []
            for each in manifests:
                run = self._smoke(each)
                if run is not None:
                    subjects = [intoto.Subject(repository, each.digest), *index]
                    predicate = smoke_predicate(run, each.digest)
                    found.append(intoto.statement(subjects, intoto.SMOKE_TEST_V1, predicate))
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
        packages = ship.packages.packages()
        infos = {each.image_id: each.info for each in ship.built.platforms}
        infos.setdefault(ship.built.image_id, ship.built.info)
        images = [
            AttestedImage(
                platform=self._platform(each),
                digest=each.digest,
                created=infos[each.image_id].labels.get(LABEL_CREATED, "")
                if each.image_id in infos
                else "",
                packages=packages.get(each.image_id),
                smoke=self._smoke(each),
            )
            for each in manifests
        ]
        facts = facts_of_build(ship.built, ship.tags, ship.started_on, ship.finished_on)
        return attestations_for(repository, facts, images, self._files(), index_digest)
