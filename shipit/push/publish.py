"""The whole push: the fixed tags ({sha} by default) to every registry concurrently, then,
only once every registry holds every fixed tag, the moving ones (`latest`). Each registry
gets one API client for the whole push, so the auth challenge (and a Bearer token fetch) is
paid once.

On a local engine shipit uploads the image itself: with the classic image store the engine
would compress every new layer on one thread once per registry, where shipit compresses it
once on every core (shipit/push/blobs.py); with the containerd store, the image shipit wrote
is its blobs in the store and the base's registry, and shipit's upload verifies the same
digest as the classic engine's. Remote engines (their export would cross the network
uncompressed), what `docker build` made on the containerd store (whose layers the engine
compressed) and `uploader = "engine"` push through the engine.

Each registry's part runs on a thread of its own and returns what it did (a `Leg`, frozen);
only the caller's thread assembles the report from them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from shipit.signing.image_signing import ImageSigning

__all__ = ["PushImage", "image_to_push", "prepared_blobs", "publish"]


def prepared_blobs(settings: Settings, engine: Engine, image: PushImage) -> ImageBlobs | None:
    """The image's blobs, their export and compression started in the background, when
    shipit will upload the image itself (else None); the caller closes them."""
    if not uploads_itself(settings.uploader, engine, image.labels):
        return None
    store = BlobStore.for_user()
    blobs = ImageBlobs(
        engine, image.id, image.layers, store, settings.engine_timeout, labels=image.labels
    )
    blobs.prepare()
    return blobs


@dataclass(frozen=True)
class Leg:
    """One registry's push so far: what its report will say, and the target and manifest
    the next tags go on with."""

    name: str
    reference: str = ""
    status: str = "pending"
    digest: str = ""
    tags: tuple[TagOutcome, ...] = ()
    notes: tuple[str, ...] = ()  # the target's
    remarks: tuple[str, ...] = ()  # the push's own: tags held back
    error: ShipitError | None = None
    seconds: float = 0.0
    target: Target | None = None
    manifest: Manifest | None = None

    @property
    def pushed(self) -> bool:
        """The registry holds every tag so far (not a failure, not a dry run)."""
        return self.error is None and self.manifest is not None

    def recorded(self, outcome: TagOutcome, attempts: int) -> Leg:
        outcome = replace(outcome, attempts=attempts)
        return replace(
            self,
            tags=(*self.tags, outcome),
            status="pushed" if outcome.status == "pushed" else self.status,
        )

    def report(self) -> TargetReport:
        return TargetReport(
            name=self.name,
            reference=self.reference,
            status=self.status,
            digest=self.digest,
            bytes_uploaded=sum(tag.bytes_uploaded for tag in self.tags),
            seconds=self.seconds,
            tags=list(self.tags),
            notes=[*self.notes, *self.remarks],
            error=self.error,
        )


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
    signing: ImageSigning | None = None
    _blobs: ImageBlobs | None = field(default=None, init=False)
    _blobs_decided: bool = field(default=False, init=False)
    _platform_blobs: dict[str, ImageBlobs] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def blobs(self) -> ImageBlobs | None:
        """The image's blobs when shipit uploads it itself, None when the engine pushes;
        decided when the first registry needs an upload, so a push of nothing asks nothing."""
        if self.prepared is not None:
            return self.prepared
        with self._lock:
            if not self._blobs_decided:
                self._blobs_decided = True
                if uploads_itself(self.uploader, self.engine, self.image.labels):
                    self._blobs = self._image_blobs(self.image)
            return self._blobs

    def blobs_of(self, image_id: str) -> ImageBlobs | None:
        """The blobs of one platform's image of a multi-platform push (the image's own for
        its id), made once and shared by every registry's thread."""
        if image_id == self.image.id:
            return self.blobs()
        if self.blobs() is None:
            return None
        with self._lock:
            if image_id not in self._platform_blobs:
                platform = next(each for each in self.image.platforms if each.id == image_id)
                self._platform_blobs[image_id] = self._image_blobs(self.image.of_platform(platform))
            return self._platform_blobs[image_id]

    def _image_blobs(self, image: PushImage) -> ImageBlobs:
        return ImageBlobs(
            self.engine,
            image.id,
            image.layers,
            BlobStore.for_user(),
            self.stall_timeout,
            labels=image.labels,
            progress=self.progress,
        )

    def close(self) -> None:
        for blobs in (self._blobs, *self._platform_blobs.values()):
            if blobs is not None:
                blobs.close()

    def _failed(self, leg: Leg, error: ShipitError) -> Leg:
        self.progress(f"{leg.name}: failed: {error.one_line()}")
        return replace(leg, status="failed", error=error)

    def push_fixed(self, name: str) -> Leg:
        """Pushes the first tag and points the other fixed tags at it."""
        started = time.monotonic()
        leg = self._push_fixed(Leg(name))
        return replace(leg, seconds=round(time.monotonic() - started, 3))

    def _push_fixed(self, leg: Leg) -> Leg:
        try:
            target = self.access.target(leg.name)
            leg = replace(leg, reference=target.reference)
            if self.access.dry_run:
                planned = tuple(TagOutcome(tag, "planned") for tag in self.image.tags.ordered)
                return replace(leg, notes=target.notes, status="planned", tags=planned)
            target = target.registry.prepare(target)
            leg = replace(leg, notes=target.notes)
            tried = with_retries(
                target,
                self.attempts,
                self.progress,
                lambda on: push_first_tag_once(
                    self.engine,
                    on,
                    self.image,
                    self.progress,
                    self.layer_progress,
                    self.blobs,
                    self.blobs_of,
                    self.signing,
                ),
            )
            # A stale cache entry looked up again during the push replaces the notes.
            leg = replace(leg, notes=tried.target.notes, target=tried.target)
            first, manifest = tried.result()
            leg = replace(leg, status=first.status, digest=first.digest, manifest=manifest)
            leg = leg.recorded(first, tried.attempts)
            for tag in self.image.tags.fixed[1:]:
                leg = self._point(leg, tag, moving=False)
                if leg.error is not None:
                    break
            return leg
        except ShipitError as error:
            return self._failed(leg, error)

    def _point(self, leg: Leg, tag: str, *, moving: bool) -> Leg:
        """`leg` with `tag` pointed at its manifest, or failed."""
        assert leg.target is not None and leg.manifest is not None
        manifest = leg.manifest

        def step(target: Target) -> TagOutcome:
            return point_tag_once(target, tag, manifest, self.progress, moving=moving)

        tried = with_retries(leg.target, self.attempts, self.progress, step)
        try:
            held_back = tried.outcome is not None and tried.outcome.status == "held-back"
            if held_back and tried.target.cached:
                # The cached tag mutability may be out of date: ask ECR before holding back.
                fresh = tried.target.registry.looked_up_again(tried.target)
                tried.target.close()
                tried = with_retries(fresh, self.attempts, self.progress, step)
            leg = replace(leg, notes=tried.target.notes, target=tried.target)
            leg = leg.recorded(tried.result(), tried.attempts)
        except ShipitError as error:
            return self._failed(replace(leg, tags=(*leg.tags, TagOutcome(tag, "failed"))), error)
        if leg.tags[-1].status == "held-back":
            # An immutable repository cannot move the tag; the fixed tags are what count.
            assert leg.target is not None
            held = (
                f"{tag} not moved: {leg.target.reference}:{tag} already holds another image and "
                "the repository's tags are immutable"
            )
            leg = replace(leg, remarks=(*leg.remarks, held))
        return leg

    def move_tags(self, leg: Leg) -> Leg:
        """Points the moving tags at what the fixed ones serve."""
        started = time.monotonic()
        for tag in self.image.tags.moving:
            leg = self._point(leg, tag, moving=True)
            if leg.error is not None:
                break
        return replace(leg, seconds=round(leg.seconds + time.monotonic() - started, 3))


def publish(
    settings: Settings,
    engine: Engine,
    image: PushImage,
    access: RegistryAccess,
    *,
    progress: Progress = quiet,
    layer_progress: LayerProgress | None = None,
    blobs: ImageBlobs | None = None,
    signing: ImageSigning | None = None,
) -> PushReport:
    """Pushes `image` (which passed its smoke test: see image_to_push) under its tags to the
    registries that `access` resolves, and reports per registry. `blobs`: the image's blobs
    when shipit uploads it itself, already being made (prepared_blobs); else made here.
    `signing`: signs each digest in each registry before its first tag names it."""
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
        signing=signing,
    )
    pool = ThreadPoolExecutor(max_workers=max(1, len(access.names)), thread_name_prefix="push")
    legs: list[Leg] = []
    try:
        legs = list(pool.map(publisher.push_fixed, access.names))
        if access.dry_run:
            pass
        elif not all(leg.pushed for leg in legs):
            # Moving tags move only once every registry holds every fixed tag.
            held = tuple(TagOutcome(tag, "held-back") for tag in image.tags.moving)
            legs = [replace(leg, tags=(*leg.tags, *held)) if leg.pushed else leg for leg in legs]
        else:
            legs = list(pool.map(publisher.move_tags, legs))
    except BaseException:
        # Ctrl-C: do not wait for pushes blocked in the engine; the caller cleans up and the
        # CLI ends the process, which closes their connections.
        pool.shutdown(wait=False, cancel_futures=True)
        # The push threads' own clean-up may never run: drop the registry-named tags here.
        for target in access.resolved():
            engine.untag(f"{target.reference}:{image.first_tag}")
        raise
    finally:
        publisher.close()
        # Targets made during the push (a fresh look-up) have clients of their own.
        for leg in legs:
            if leg.target is not None:
                leg.target.close()
    pool.shutdown(wait=True)
    reports = [leg.report() for leg in legs]
    if signing is not None:
        for report in reports:
            report.signed_by = signing.key_id
            report.signatures = [each.to_json() for each in signing.attached(report.name)]
    return PushReport(
        image_id=image.id,
        build_id=image.build_id,
        tags=image.tags.ordered,
        dry_run=access.dry_run,
        targets=reports,
        skipped_tags=[skipped.one_line() for skipped in image.tags.skipped],
    )
