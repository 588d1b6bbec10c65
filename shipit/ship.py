"""The stages that publish: push (the newest build, smoke-tested) and ship (build, run,
smoke, push and stop, in that order), over pipeline.py's stages."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shipit.config import Settings
from shipit.digests import short_id
from shipit.labels import LABEL_BASE_DIGEST
from shipit.lock import project_lock
from shipit.pipeline import BuildResult, RunResult, build, run, stop
from shipit.progress import LayerProgress, Progress, quiet
from shipit.signing.ship_attestations import PackageReads, ShipFacts
from shipit.state import smoke_pass_of

if TYPE_CHECKING:
    from shipit.engine import Engine
    from shipit.push import PushReport
    from shipit.push.image import PlatformImage
    from shipit.registries.catalog import RegistrySpec
    from shipit.signing.image_signing import ImageSigning


@dataclass(frozen=True)
class ShipResult:
    build: BuildResult
    run: RunResult | None  # None when this very image had already passed its smoke test
    push: PushReport
    smoke_reused: dict[str, str] | None = None
    # Every run of a multi-platform ship, one per platform not smoke-tested before.
    runs: tuple[RunResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.push.failed,
            "build": self.build.to_json(),
            "run": self.run.to_json() if self.run else None,
            "runs": [each.to_json() for each in self.runs],
            "smoke_reused": self.smoke_reused,
            "push": self.push.to_json(),
        }


def platform_images(built: BuildResult) -> tuple[PlatformImage, ...]:
    from shipit.push.image import PlatformImage

    return tuple(
        PlatformImage(
            each.platform,
            each.image_id,
            each.info.layers,
            each.info.labels.get(LABEL_BASE_DIGEST, ""),
        )
        for each in built.platforms
    )


def push(
    settings: Settings,
    engine: Engine,
    to: tuple[RegistrySpec, ...],
    *,
    dry_run: bool = False,
    skip_smoke: bool = False,
    allow_root: bool = False,
    progress: Progress = quiet,
    layer_progress: LayerProgress | None = None,
) -> PushReport:
    """Pushes the newest build, which must have passed its smoke test (unless skip_smoke)."""
    from shipit.push import RegistryAccess, image_to_push, publish
    from shipit.push.image import with_platforms

    # A dry run changes nothing, so it need not wait for a ship to finish.
    locked = contextlib.nullcontext() if dry_run else project_lock(settings, "push", progress)
    with locked:
        signing = _signing(settings, engine, progress)
        refuse_several_platforms_unless_uploading(settings, engine)
        image = image_to_push(settings, engine, skip_smoke=skip_smoke)
        image = with_platforms(image, settings, engine, skip_smoke=skip_smoke)
        with RegistryAccess(
            settings,
            to,
            dry_run=dry_run,
            allow_root=allow_root,
            registry_rules=engine.registry_rules,
        ) as access:
            return publish(
                settings,
                engine,
                image,
                access,
                progress=progress,
                layer_progress=layer_progress,
                signing=signing,
            )


def ship(
    settings: Settings,
    engine: Engine,
    *,
    to: tuple[RegistrySpec, ...],
    allow_root: bool = False,
    resmoke: bool = False,
    progress: Progress = quiet,
    layer_progress: LayerProgress | None = None,
) -> ShipResult:
    """build -> run -> smoke -> push -> stop; no container is left behind whatever happens.

    An image that already passed its smoke test here (shipit.push.image states the rule) is
    not run again unless `resmoke`. The project's container is removed while the push runs,
    as the push needs only the image; that is also the container a ship killed after its
    smoke pass left running. The registries' credentials are looked up meanwhile
    (RegistryAccess), from the start, and the image's new layers are compressed meanwhile
    (prepared_blobs), from the build. One ship at a time per project (project_lock)."""
    with project_lock(settings, "ship", progress):
        signing = _signing(settings, engine, progress)
        refuse_several_platforms_unless_uploading(settings, engine)
        return _ship(settings, engine, to, allow_root, resmoke, progress, layer_progress, signing)


def _ship(
    settings: Settings,
    engine: Engine,
    to: tuple[RegistrySpec, ...],
    allow_root: bool,
    resmoke: bool,
    progress: Progress,
    layer_progress: LayerProgress | None,
    signing: ImageSigning | None,
) -> ShipResult:
    from shipit.push import PushImage, RegistryAccess, prepared_blobs, publish

    started_on = dt.datetime.now(dt.UTC)
    packages = PackageReads(engine)
    ran: RunResult | None = None
    runs: list[RunResult] = []
    earlier_pass: dict[str, str] | None = None
    removal: threading.Thread | None = None
    blobs = None
    with RegistryAccess(
        settings, to, allow_root=allow_root, registry_rules=engine.registry_rules
    ) as access:
        try:
            built = build(settings, engine, progress)
            built_on = dt.datetime.now(dt.UTC)
            image = PushImage.of(built.info, settings)
            if built.platforms:
                image = replace(image, platforms=platform_images(built))
            blobs = prepared_blobs(settings, engine, image)
            # Every platform's image runs and passes before any tag moves.
            for one in [built.of_platform(platform) for platform in built.platforms] or [built]:
                packages.before_next_run()
                earlier = None if resmoke else smoke_pass_of(settings, one.image_id)
                if earlier is not None:
                    progress(
                        f"image {short_id(one.image_id)} passed its smoke test at "
                        f"{earlier['at']}: not running it again (--resmoke to run it)"
                    )
                else:
                    one_run = run(settings, engine, smoke=True, progress=progress, built=one)
                    runs.append(one_run)
                if signing is not None:
                    # The SBOM lists the OS packages: read in the container, or for a reused
                    # pass kept when it ran.
                    packages.ran("" if earlier is not None else runs[-1].container, one.image_id)
                if one.image_id == built.image_id:
                    earlier_pass = earlier
                    ran = None if earlier is not None else runs[-1]
            packages.in_background()
            removal = threading.Thread(
                target=_stop_quietly, args=(settings, engine, progress, packages), daemon=True
            )
            removal.start()
            if signing is not None:
                tags = image.tags.ordered
                signing.attesting.shipped(ShipFacts(built, started_on, built_on, tags, packages))
            pushed = publish(
                settings,
                engine,
                image,
                access,
                signing=signing,
                blobs=blobs,
                progress=progress,
                layer_progress=layer_progress,
            )
        except BaseException:
            # Before the removal started, the build failed (perhaps the engine with it) or the
            # run did, which removes its own container. After, the failure that stopped the
            # ship is the one to report, not a failed removal.
            if removal is not None:
                removal.join()
                _stop_quietly(settings, engine, progress)
            raise
        finally:
            if blobs is not None:
                blobs.close()
        removal.join()
        # Whatever the removal thread missed.
        for name in stop(settings, engine, progress):
            progress(f"removed {name}")
    return ShipResult(
        build=built, run=ran, push=pushed, smoke_reused=earlier_pass, runs=tuple(runs)
    )


def _signing(settings: Settings, engine: Engine, progress: Progress) -> ImageSigning | None:
    """The push's signing, its key loaded before anything is built or pushed: a key that
    cannot be used fails the command with every tag as it was."""
    if not settings.signing_key:
        return None
    from shipit.signing.image_signing import image_signing
    from shipit.signing.ship_attestations import Attesting

    @functools.cache
    def engine_platform() -> str:
        return str(engine.platform())

    return image_signing(settings, Attesting(settings, engine_platform), progress)


def _stop_quietly(
    settings: Settings, engine: Engine, progress: Progress, reading: PackageReads | None = None
) -> None:
    """The background removal in ship, once the image's package database is read from its
    container (`reading`); a failure here is retried by ship's final stop."""
    if reading is not None:
        reading.wait()
    try:
        for name in stop(settings, engine, progress):
            progress(f"removed {name}")
    except Exception:  # noqa: BLE001, S110 - ship calls stop again after the push
        pass


def refuse_several_platforms_unless_uploading(settings: Settings, engine: Engine) -> None:
    """An index of several platforms is uploaded by shipit itself: said before anything is
    built when the engine would push instead."""
    from shipit.push.blobs import engine_push_reason

    if not settings.platforms.several:
        return
    reason = engine_push_reason(settings.uploader, engine)
    if reason is not None:
        from shipit.errors import PreconditionError

        raise PreconditionError(
            f"an image of several platforms ({', '.join(settings.platforms.names)}) is "
            f"uploaded by shipit itself, and here the engine would push it ({reason})",
            "ship one platform at a time (--platform linux/arm64), or from a local engine "
            'with uploader = "auto"',
        )
