"""The whole push: the sha tag to every registry concurrently, then, only once every registry
holds it, `latest` everywhere. Each registry gets one API client for the whole push, so the
auth challenge (and a Bearer token fetch) is paid once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shipit.config import Settings
from shipit.engine import Engine
from shipit.errors import ShipitError
from shipit.progress import LayerProgress, Progress
from shipit.push.image import PushImage, image_to_push
from shipit.push.report import LATEST, PushReport, TagOutcome, TargetReport
from shipit.push.retry import with_retries
from shipit.push.steps import move_latest_once, push_sha_once
from shipit.push.targets import RegistryAccess, Target
from shipit.registries.distribution import Manifest

__all__ = ["PushImage", "image_to_push", "publish"]


@dataclass
class _Publisher:
    engine: Engine
    image: PushImage
    access: RegistryAccess
    attempts: int
    progress: Progress
    layer_progress: LayerProgress | None

    def _failed(self, report: TargetReport, error: ShipitError) -> None:
        report.fail(error)
        self.progress(f"{report.name}: failed: {error.one_line()}")

    def push_sha(self, report: TargetReport) -> tuple[Target, Manifest] | None:
        """Pushes the sha tag: the registry and the manifest it now serves under the sha tag,
        or None when nothing was pushed (a failure, a dry run)."""
        started = time.monotonic()
        try:
            target = self.access.target(report.name)
            report.reference = target.reference
            if self.access.dry_run:
                report.notes = list(target.notes)
                report.status = "planned"
                report.tags = [
                    TagOutcome(self.image.sha_tag, "planned"),
                    TagOutcome(LATEST, "planned"),
                ]
                return None
            target.ensure_repository()
            report.notes = list(target.notes)
            (outcome, sha_manifest), attempts = with_retries(
                target,
                self.attempts,
                self.progress,
                lambda: push_sha_once(
                    self.engine, target, self.image, self.progress, self.layer_progress
                ),
            )
            outcome.attempts = attempts
            report.tags.append(outcome)
            report.digest = outcome.digest
            report.bytes_uploaded += outcome.bytes_uploaded
            report.status = outcome.status
            return target, sha_manifest
        except ShipitError as error:
            self._failed(report, error)
            return None
        finally:
            report.seconds = round(time.monotonic() - started, 3)

    def move_latest(self, report: TargetReport, tagged: tuple[Target, Manifest]) -> None:
        target, sha_manifest = tagged
        started = time.monotonic() - report.seconds
        try:
            outcome, attempts = with_retries(
                target,
                self.attempts,
                self.progress,
                lambda: move_latest_once(target, sha_manifest, self.progress),
            )
            outcome.attempts = attempts
            report.tags.append(outcome)
            if outcome.status == "held-back":
                # An immutable repository cannot move `latest`; the sha tag is what counts.
                report.notes.append(
                    f"latest not moved: {target.reference}:{LATEST} already holds another "
                    "image and the repository's tags are immutable"
                )
            elif outcome.status == "pushed":
                report.status = "pushed"
        except ShipitError as error:
            report.tags.append(TagOutcome(LATEST, "failed"))
            self._failed(report, error)
        finally:
            report.seconds = round(time.monotonic() - started, 3)


def publish(
    settings: Settings,
    engine: Engine,
    image: PushImage,
    access: RegistryAccess,
    *,
    progress: Progress = lambda _: None,
    layer_progress: LayerProgress | None = None,
) -> PushReport:
    """Pushes `image` (which passed its smoke test: see image_to_push) to the registries that
    `access` resolves, and reports per registry."""
    publisher = _Publisher(
        engine=engine,
        image=image,
        access=access,
        attempts=settings.push_attempts,
        progress=progress,
        layer_progress=layer_progress,
    )
    report = PushReport(
        image_id=image.id,
        build_id=image.build_id,
        sha_tag=image.sha_tag,
        dry_run=access.dry_run,
        targets=[TargetReport(name=name) for name in access.names],
    )
    pool = ThreadPoolExecutor(max_workers=len(access.names), thread_name_prefix="push")
    try:
        tagged = list(pool.map(publisher.push_sha, report.targets))
        if access.dry_run:
            pass
        elif any(registry is None for registry in tagged):
            # latest moves only once every registry holds the sha tag.
            for target_report, registry in zip(report.targets, tagged, strict=True):
                if registry is not None:
                    target_report.tags.append(TagOutcome(LATEST, "held-back"))
        else:
            moved = [registry for registry in tagged if registry is not None]
            list(pool.map(publisher.move_latest, report.targets, moved))
    except BaseException:
        # Ctrl-C: do not wait for pushes blocked in the engine; the caller cleans up and the
        # CLI ends the process, which closes their connections.
        pool.shutdown(wait=False, cancel_futures=True)
        # The push threads' own clean-up may never run: drop the registry-named tags here.
        for target_report in report.targets:
            if target_report.reference:
                engine.untag(f"{target_report.reference}:{image.sha_tag}")
        raise
    pool.shutdown(wait=True)
    return report
