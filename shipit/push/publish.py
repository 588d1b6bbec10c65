"""The whole push: the fixed tags ({sha} by default) to every registry concurrently, then,
only once every registry holds every fixed tag, the moving ones (`latest`). Each registry
gets one API client for the whole push, so the auth challenge (and a Bearer token fetch) is
paid once.

On a local engine with the classic image store, shipit uploads the image itself: the
engine would compress every new layer on one thread once per registry, where shipit
compresses it once on every core (shipit/push/blobs.py). Remote engines (their export would
cross the network uncompressed) and the containerd store (which keeps compressed layers and
pushes them as they are) push through the engine, as does `uploader = "engine"`."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shipit.config import Settings
from shipit.engine import Engine
from shipit.errors import ShipitError
from shipit.progress import LayerProgress, Progress, quiet
from shipit.push.blobs import BlobStore, uploads_itself
from shipit.push.image import PushImage, image_to_push
from shipit.push.image_blobs import ImageBlobs
from shipit.push.report import PushReport, TagOutcome, TargetReport
from shipit.push.retry import with_retries
from shipit.push.steps import point_tag_once, push_first_tag_once
from shipit.push.targets import RegistryAccess, Target
from shipit.registries.manifest import Manifest

__all__ = ["PushImage", "image_to_push", "prepared_blobs", "publish"]


def prepared_blobs(settings: Settings, engine: Engine, image: PushImage) -> ImageBlobs | None:
    """The image's blobs, their export and compression started in the background, when
    shipit will upload the image itself (else None); the caller closes them."""
    if not uploads_itself(settings.uploader, engine):
        return None
    store = BlobStore.for_user()
    blobs = ImageBlobs(engine, image.id, image.layers, store, settings.engine_timeout)
    blobs.prepare()
    return blobs


@dataclass
class _Publisher:
    engine: Engine
    image: PushImage
    access: RegistryAccess
    attempts: int
    progress: Progress
    layer_progress: LayerProgress | None
    uploader: str
    stall_timeout: float
    prepared: ImageBlobs | None = None  # the caller's, which it closes
    _blobs: ImageBlobs | None = field(default=None, init=False)
    _blobs_decided: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def blobs(self) -> ImageBlobs | None:
        """The image's blobs when shipit uploads it itself, None when the engine pushes;
        decided when the first registry needs an upload, so a push of nothing asks nothing."""
        if self.prepared is not None:
            return self.prepared
        with self._lock:
            if not self._blobs_decided:
                self._blobs_decided = True
                if uploads_itself(self.uploader, self.engine):
                    self._blobs = ImageBlobs(
                        self.engine,
                        self.image.id,
                        self.image.layers,
                        BlobStore.for_user(),
                        self.stall_timeout,
                    )
            return self._blobs

    def close(self) -> None:
        if self._blobs is not None:
            self._blobs.close()

    def _failed(self, report: TargetReport, error: ShipitError) -> None:
        report.fail(error)
        self.progress(f"{report.name}: failed: {error.one_line()}")

    def _record(self, report: TargetReport, outcome: TagOutcome, attempts: int) -> None:
        outcome.attempts = attempts
        report.tags.append(outcome)
        report.bytes_uploaded += outcome.bytes_uploaded
        if outcome.status == "pushed":
            report.status = "pushed"

    def push_fixed(self, report: TargetReport) -> tuple[Target, Manifest] | None:
        """Pushes the first tag and points the other fixed tags at it: the registry and the
        manifest it serves under them, or None when nothing was pushed (a failure, a dry run)."""
        started = time.monotonic()
        try:
            target = self.access.target(report.name)
            report.reference = target.reference
            if self.access.dry_run:
                report.notes = list(target.notes)
                report.status = "planned"
                report.tags = [TagOutcome(tag, "planned") for tag in self.image.tags.ordered]
                return None
            target.ensure_repository()
            # The target's own list: a stale cache entry looked up again during the push
            # replaces its notes, and the report shows them as they end up.
            report.notes = target.notes
            (outcome, manifest), attempts = with_retries(
                target,
                self.attempts,
                self.progress,
                lambda: push_first_tag_once(
                    self.engine, target, self.image, self.progress, self.layer_progress, self.blobs
                ),
            )
            report.status = outcome.status
            report.digest = outcome.digest
            self._record(report, outcome, attempts)
            for tag in self.image.tags.fixed[1:]:
                self._point(report, target, tag, manifest, moving=False)
            return target, manifest
        except ShipitError as error:
            self._failed(report, error)
            return None
        finally:
            report.seconds = round(time.monotonic() - started, 3)

    def _point(
        self, report: TargetReport, target: Target, tag: str, manifest: Manifest, *, moving: bool
    ) -> None:
        def step() -> TagOutcome:
            outcome = point_tag_once(target, tag, manifest, self.progress, moving=moving)
            if outcome.status == "held-back" and target.resolve_fresh is not None:
                # The cached tag mutability may be out of date: ask ECR before holding back.
                target.forget_cached()
                outcome = point_tag_once(target, tag, manifest, self.progress, moving=moving)
            return outcome

        try:
            outcome, attempts = with_retries(target, self.attempts, self.progress, step)
        except ShipitError:
            report.tags.append(TagOutcome(tag, "failed"))
            raise
        self._record(report, outcome, attempts)
        if outcome.status == "held-back":
            # An immutable repository cannot move the tag; the fixed tags are what count.
            report.notes.append(
                f"{tag} not moved: {target.reference}:{tag} already holds another image and "
                "the repository's tags are immutable"
            )

    def move_tags(self, report: TargetReport, pushed: tuple[Target, Manifest]) -> None:
        target, manifest = pushed
        started = time.monotonic() - report.seconds
        try:
            for tag in self.image.tags.moving:
                self._point(report, target, tag, manifest, moving=True)
        except ShipitError as error:
            self._failed(report, error)
        finally:
            report.seconds = round(time.monotonic() - started, 3)


def publish(
    settings: Settings,
    engine: Engine,
    image: PushImage,
    access: RegistryAccess,
    *,
    progress: Progress = quiet,
    layer_progress: LayerProgress | None = None,
    blobs: ImageBlobs | None = None,
) -> PushReport:
    """Pushes `image` (which passed its smoke test: see image_to_push) under its tags to the
    registries that `access` resolves, and reports per registry. `blobs`: the image's blobs
    when shipit uploads it itself, already being made (prepared_blobs); else made here."""
    for skipped in image.tags.skipped:
        progress(skipped.one_line())
    if not access.dry_run:
        # Whatever a killed push left in the blob store goes now, not a day later.
        BlobStore.for_user().forget_abandoned_pushes()
    publisher = _Publisher(
        engine=engine,
        image=image,
        access=access,
        attempts=settings.push_attempts,
        progress=progress,
        layer_progress=layer_progress,
        uploader=settings.uploader,
        stall_timeout=settings.engine_timeout,
        prepared=blobs,
    )
    report = PushReport(
        image_id=image.id,
        build_id=image.build_id,
        tags=image.tags.ordered,
        dry_run=access.dry_run,
        targets=[TargetReport(name=name) for name in access.names],
        skipped_tags=[skipped.one_line() for skipped in image.tags.skipped],
    )
    pool = ThreadPoolExecutor(max_workers=max(1, len(access.names)), thread_name_prefix="push")
    try:
        pushed = list(pool.map(publisher.push_fixed, report.targets))
        if access.dry_run:
            pass
        elif any(registry is None for registry in pushed):
            # Moving tags move only once every registry holds every fixed tag.
            for target_report, registry in zip(report.targets, pushed, strict=True):
                if registry is not None:
                    target_report.tags += [
                        TagOutcome(tag, "held-back") for tag in image.tags.moving
                    ]
        else:
            ready = [registry for registry in pushed if registry is not None]
            list(pool.map(publisher.move_tags, report.targets, ready))
    except BaseException:
        # Ctrl-C: do not wait for pushes blocked in the engine; the caller cleans up and the
        # CLI ends the process, which closes their connections.
        pool.shutdown(wait=False, cancel_futures=True)
        # The push threads' own clean-up may never run: drop the registry-named tags here.
        for target_report in report.targets:
            if target_report.reference:
                engine.untag(f"{target_report.reference}:{image.first_tag}")
        raise
    finally:
        publisher.close()
    pool.shutdown(wait=True)
    return report
