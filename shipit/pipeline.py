"""The stages of a ship as plain functions over typed results: render, build, run, smoke, stop.

Each stage cleans up after itself when it fails, so no failure leaves a container or a
half-set tag behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipit import __version__, interrupts, screenshot
from shipit.base_image import (
    has_gzip_static,
    platform_to_run,
    platforms_to_build,
    resolve_base_image,
)
from shipit.builder import base_facts_started, build_image, undone_unless_complete
from shipit.config import Settings
from shipit.digests import short_id
from shipit.errors import (
    NO_EMULATOR_WORDS,
    ContainerExitedError,
    EngineError,
    PreconditionError,
    RunError,
    SmokeError,
    no_emulator,
)
from shipit.inputs import FileIndex, build_id_from, scan_sources
from shipit.labels import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_IMAGE_ID,
    LABEL_BASE_NAME,
    LABEL_BUILD_ID,
    LABEL_CONTEXT_DIGEST,
    LABEL_CREATED,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_TITLE,
    LABEL_URL,
    LABEL_VERSION,
)
from shipit.lock import project_lock
from shipit.loopback import is_loopback
from shipit.pages import page_paths
from shipit.progress import Progress, quiet
from shipit.site_address import ensure_port_free, publish_host, reach_host, site_url
from shipit.smoke import SmokeReport, run_smoke, wait_until_ready
from shipit.source_date import source_date
from shipit.state import record_smoke_passed
from shipit.vcs import NO_COMMIT_HINT, Revision, revision_started, source_url

if TYPE_CHECKING:
    # Only the stages that need them import docker, boto3 and Jinja: render and smoke stay
    # light, and a build of unchanged input renders nothing.
    from shipit.engine import Engine, ImageInfo
    from shipit.platforms import Platform
    from shipit.render import RenderedSite

LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class BuildResult:
    info: ImageInfo
    image: str
    image_id: str
    tags: tuple[str, ...]
    build_id: str
    context_digest: str
    base_image: str
    built: bool
    seconds: float
    # A multi-platform build: every platform's image, in the order the index names them
    # (this result's own image is one of them). Empty for a build of one platform.
    platforms: tuple[PlatformBuild, ...] = ()
    # The path of every page, for the smoke test's crawl (the report says how many it saw).
    pages: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["info"], data["pages"]
        data["platforms"] = [platform.to_json() for platform in self.platforms]
        return data

    def of_platform(self, platform: PlatformBuild) -> BuildResult:
        """This build as the one image of `platform` (what run serves)."""
        return replace(self, info=platform.info, image_id=platform.image_id, built=platform.built)


@dataclass(frozen=True)
class PlatformBuild:
    platform: Platform
    image_id: str
    built: bool
    info: ImageInfo

    def to_json(self) -> dict[str, Any]:
        return {"platform": str(self.platform), "image_id": self.image_id, "built": self.built}


@dataclass(frozen=True)
class RunResult:
    build: BuildResult
    url: str
    container: str
    image_id: str
    build_id: str
    smoke: SmokeReport | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "build": self.build.to_json(),
            "url": self.url,
            "container": self.container,
            "image_id": self.image_id,
            "build_id": self.build_id,
            "seconds": self.seconds,
        }
        data["smoke"] = self.smoke.to_json() if self.smoke else None
        return data


# Render and build


def _render_base_image(settings: Settings, progress: Progress) -> tuple[str, bool]:
    """The base image a build would use now, and whether its nginx has gzip_static. Only
    the default can fall back, so only then is the engine asked; when none answers, render
    says so and uses the default, whose nginx (the official image's) has the module."""
    if not settings.base_image_may_fall_back:
        return settings.base_image, True
    from shipit.engine import Engine

    try:
        engine = Engine.connect(settings.engine_timeout)
        base = resolve_base_image(settings, engine, progress)
        return base.reference, has_gzip_static(settings, engine, base)
    except EngineError as error:
        progress(f"{error.message}: rendering for {settings.base_image}")
        return settings.base_image, True


def render(
    settings: Settings, out_dir: Path | None = None, progress: Progress = quiet
) -> RenderedSite:
    from shipit.render import render_site

    base_image, gzip_static = _render_base_image(settings, progress)
    site = render_site(
        settings.project_dir, base_image, max_size=settings.max_site_size, gzip_static=gzip_static
    )
    if out_dir is not None:
        site.write_to(out_dir)
    return site


def build(
    settings: Settings, engine: Engine, progress: Progress = quiet, *, to_run: bool = False
) -> BuildResult:
    """Renders and builds the image of the platform the settings name (the one to serve when
    `to_run`), and tags it once it is complete. A build that fails or is interrupted (SIGINT,
    SIGTERM) leaves the engine's images and tags as they were."""
    with project_lock(settings, "build", progress):
        chosen = (
            (platform_to_run(settings, engine),) if to_run else platforms_to_build(settings, engine)
        )
        try:
            if chosen is None or len(chosen) == 1:
                platform = None if chosen is None else chosen[0]
                if platform is not None and platform.matches(engine.platform()):
                    platform = None
                return _build(settings, engine, progress, platform)
            return _build_platforms(settings, engine, progress, chosen)
        except KeyboardInterrupt as stopped:
            raise interrupts.error_for(stopped, "nothing was built or tagged") from stopped


def _build_platforms(
    settings: Settings, engine: Engine, progress: Progress, chosen: tuple[Platform, ...]
) -> BuildResult:
    """One image per platform, the same site layer on each platform's base image. The
    engine's own platform (else the first) is tagged as a one-platform build is; the others
    under the same tags with their platform after a '-', which keeps them from being pruned."""
    native = engine.platform()
    primary = next((platform for platform in chosen if platform.matches(native)), chosen[0])
    results: dict[Platform, BuildResult] = {}
    for platform in chosen:
        suffix = "" if platform == primary else str(platform).replace("/", "-")
        progress(f"building the {platform} image")
        # Where the commit came from is said once, with the first platform.
        results[platform] = _build(
            settings, engine, progress, platform, suffix, say_commit=not results
        )
    builds = tuple(
        PlatformBuild(platform, result.image_id, result.built, result.info)
        for platform, result in results.items()
    )
    return replace(
        results[primary],
        built=any(result.built for result in results.values()),
        platforms=builds,
    )


def _build(
    settings: Settings,
    engine: Engine,
    progress: Progress,
    platform: Platform | None,
    suffix: str = "",
    *,
    say_commit: bool = True,
) -> BuildResult:
    started = time.monotonic()
    base = resolve_base_image(settings, engine, progress, platform)
    base_image, base_image_id = base.reference, base.image_id
    # The build id digests every input of the render, and rendering is deterministic: an image
    # with this build id holds exactly what rendering now would give, so nothing is rendered.
    # Hashes of unchanged files come from .shipit/'s index (a no-change build reads nothing).
    # git runs beside the scan; CI's variables name the commit when git knows none.
    answer_revision = revision_started(settings.project_dir, os.environ)
    index = FileIndex(settings.state_dir)
    sources = scan_sources(settings.project_dir, index=index, max_size=settings.max_site_size)
    build_id = build_id_from(sources, base_image)
    rev = answer_revision()
    created = source_date(os.environ, rev)
    # Only once git has answered: a .shipit/ that git status sees before its .gitignore is
    # written makes a fresh checkout (a CI runner) look dirty.
    index.save()
    tag = rev.tag or f"build-{build_id[:12]}"
    commit = rev.commit or "unknown"
    # Same input, base, name, commit and time: the labels of the existing image are all still
    # true. The base is the engine's image of it, or, on the containerd image store (whose
    # id for it is its manifest's digest, and whose image shipit wrote names the base by its
    # config's digest, as the classic store does), the manifest the base's registry serves.
    reusable = [
        image
        for image in engine.images_with_label(LABEL_BUILD_ID, build_id)
        if base_image_id
        in (image.labels.get(LABEL_BASE_IMAGE_ID), image.labels.get(LABEL_BASE_DIGEST))
        and image.labels.get(LABEL_IMAGE) == settings.image
        and image.labels.get(LABEL_REVISION) == commit
        and image.labels.get(LABEL_CREATED) == created.rfc3339
        and image.labels.get(LABEL_CONTEXT_DIGEST)
    ]
    if reusable:
        image_id = reusable[0].id
        context_digest = reusable[0].labels[LABEL_CONTEXT_DIGEST]
        progress(f"nothing changed since image {short_id(image_id)}: no docker build needed")
    else:
        from shipit.render import load_site_data, render_site

        # What writing the image needs from the engine, asked while Jinja renders.
        base_facts = base_facts_started(settings, engine, base)
        site = render_site(
            settings.project_dir,
            base_image,
            build_id,
            sources=sources,
            gzip_static=has_gzip_static(settings, engine, base),
        )
        context_digest = site.context_digest
        title = load_site_data(settings.site_dir).get("title")
        labels = {
            "org.opencontainers.image.source": source_url(settings.project_dir),
            LABEL_REVISION: commit,
            LABEL_CREATED: created.rfc3339,
            LABEL_VERSION: tag,
            LABEL_TITLE: str(title or settings.image),
            LABEL_IMAGE: settings.image,
            LABEL_BASE_NAME: base_image,
            LABEL_CONTEXT_DIGEST: context_digest,
            LABEL_BUILD_ID: build_id,
            LABEL_BASE_IMAGE_ID: base_image_id,
            "io.shipit.version": __version__,
        }
        if base.manifest_digest:
            labels[LABEL_BASE_DIGEST] = base.manifest_digest
    tags: tuple[str, ...] = (f"{settings.image}:{tag}", f"{settings.image}:latest")
    if suffix:
        tags = (f"{settings.image}:{tag}-{suffix}",)
    # An image that already holds both tags needs no call to the engine.
    moved = [reference for reference in tags if not reusable or reference not in reusable[0].tags]
    with undone_unless_complete(engine, moved) as undo:
        if not reusable:
            progress(f"image dated {created.rfc3339}: {created.origin}")
            image_id = build_image(
                settings, engine, site, base, base_facts, labels, tags[0], undo, progress, platform
            )
        for reference in moved:
            engine.tag(image_id, *reference.rsplit(":", 1))
        info = reusable[0] if reusable else engine.image(image_id)
        if info is None:
            raise EngineError(f"the engine does not list the image {image_id[:19]} it just built")
    if say_commit:
        _say_where_the_commit_came_from(rev, tag, progress)
    return BuildResult(
        info=info,
        image=settings.image,
        image_id=image_id,
        tags=tags,
        build_id=build_id,
        context_digest=context_digest,
        base_image=base_image,
        built=not reusable,
        seconds=round(time.monotonic() - started, 3),
        pages=page_paths(key.removeprefix("templates/") for key, _ in sources.items("templates/")),
    )


def _say_where_the_commit_came_from(rev: Revision, tag: str, progress: Progress) -> None:
    """A tag that is not a commit cannot be traced back to the source: never silently."""
    if not rev.commit:
        progress(f"warning: tagged {tag}, not a commit id: {rev.why_none}; {NO_COMMIT_HINT}")
    elif rev.source != "git":
        progress(f"commit {rev.commit[:12]} taken from {rev.source}: git knows no commit here")


# Run, smoke, stop


def container_name(settings: Settings) -> str:
    return "shipit-" + settings.image.replace("/", "-").replace(":", "-")


def stop(settings: Settings, engine: Engine, progress: Progress = quiet) -> list[str]:
    with project_lock(settings, "stop", progress):
        removed = []
        for container in engine.containers_with_labels(
            {LABEL_MANAGED: "true", LABEL_IMAGE: settings.image}
        ):
            engine.remove_container(container.id)
            removed.append(container.name)
        return removed


def run(
    settings: Settings,
    engine: Engine,
    *,
    smoke: bool = True,
    read_only: bool = False,
    screenshot_request: ScreenshotRequest | None = None,
    progress: Progress = quiet,
    built: BuildResult | None = None,
) -> RunResult:
    with project_lock(settings, "run", progress):
        return _run(settings, engine, smoke, read_only, screenshot_request, progress, built)


def _run(
    settings: Settings,
    engine: Engine,
    smoke: bool,
    read_only: bool,
    screenshot_request: ScreenshotRequest | None,
    progress: Progress,
    built: BuildResult | None,
) -> RunResult:
    started = time.monotonic()
    # Running what is on disk is what users mean; the build is a no-op when nothing changed.
    if built is None:
        built = build(settings, engine, progress, to_run=True)
    image_id, build_id = built.image_id, built.build_id
    for name in stop(settings, engine):
        progress(f"replaced the previous container {name}")
    published_on = publish_host(settings, engine)
    if engine.address.is_remote and is_loopback(published_on) and not settings.reach_host:
        raise RunError(
            f"--host {published_on} is the loopback of the engine's machine "
            f"({engine.address.host}), which this machine cannot reach",
            "publish on one of its addresses (--host 0.0.0.0 for all), or tunnel the port "
            "and pass --reach-host",
        )
    ensure_port_free(engine, published_on, settings.port)
    url = site_url(reach_host(settings, engine, published_on), settings.port)
    name = container_name(settings)
    labels = {
        LABEL_MANAGED: "true",
        LABEL_IMAGE: settings.image,
        LABEL_URL: url,
        LABEL_BUILD_ID: build_id,
    }
    if published_on != settings.host:
        progress(
            f"the engine is remote: publishing on {published_on}:{settings.port} there, "
            "so whoever reaches that machine sees the site (--host to narrow it)"
        )
    progress(f"starting {name} on {url}")
    from shipit.render import LISTEN_PORT

    container_id = engine.run(
        image_id, name, published_on, settings.port, LISTEN_PORT, labels, read_only=read_only
    )
    try:
        report = _wait_and_smoke(
            settings,
            engine,
            container_id,
            url,
            built,
            screenshot_request if smoke else None,
            smoke,
            progress,
        )
    except BaseException:
        # Interrupts included: a failed or aborted run leaves no container behind.
        engine.remove_container(container_id)
        raise
    return RunResult(
        build=built,
        url=url,
        container=name,
        image_id=image_id,
        build_id=build_id,
        smoke=report,
        seconds=round(time.monotonic() - started, 3),
    )


def _wait_and_smoke(
    settings: Settings,
    engine: Engine,
    container_id: str,
    url: str,
    built: BuildResult,
    screenshot_request: ScreenshotRequest | None,
    smoke: bool,
    progress: Progress,
) -> SmokeReport | None:
    image_id, build_id, architecture = built.image_id, built.build_id, built.info.architecture

    def still_running() -> bool:
        info = engine.container(container_id)
        return info is not None and info.status in ("created", "running")

    if not wait_until_ready(url, settings.ready_timeout, still_running):
        info = engine.container(container_id)
        logs = engine.logs_tail(container_id, LOG_TAIL_LINES)
        if info is None or info.status not in ("created", "running"):
            code = info.exit_code if info else "unknown"
            if NO_EMULATOR_WORDS in logs.lower():
                raise no_emulator(architecture)
            raise ContainerExitedError(
                f"the container exited at start with code {code}",
                "its last log lines are below; fix the nginx template or the base image",
                details=logs,
            )
        raise RunError(
            f"the site did not answer {url}/healthz within {settings.ready_timeout:g} s",
            "raise --ready-timeout or read the container log below",
            details=logs,
        )
    progress(f"ready at {url}")
    if not smoke:
        return None
    report = run_smoke(url, build_id, built.pages, settings.crawl_timeout)
    _attach_screenshot(report, screenshot_request, progress)
    if not report.ok:
        raise report.error("the container was removed; fix the site and run again")
    record_smoke_passed(settings, image_id, build_id, url, report.checks)
    return report


@dataclass(frozen=True)
class ScreenshotRequest:
    path: Path
    window: tuple[int, int]


def _attach_screenshot(
    report: SmokeReport, request: ScreenshotRequest | None, progress: Progress
) -> None:
    """A screenshot never fails the smoke test: without Chromium the checks still count."""
    if request is None:
        return
    try:
        shot = screenshot.take(report.url, request.path, request.window)
    except SmokeError as error:
        report.screenshot = {"path": str(request.path), "error": error.one_line()}
        progress(f"screenshot not taken: {error.one_line()}")
        return
    report.screenshot = {"path": str(shot.path), "width": shot.width, "height": shot.height}
    progress(f"screenshot of {report.url} written to {shot.path} ({shot.width}x{shot.height})")


def smoke(
    settings: Settings,
    url: str | None,
    engine: Engine | None,
    screenshot_request: ScreenshotRequest | None = None,
    progress: Progress = quiet,
) -> SmokeReport:
    """Smoke-tests URL, or the running shipit container, against the newest build's id."""
    expected_build_id = ""
    image_id = ""
    if engine is not None:
        image = engine.image(f"{settings.image}:latest")
        if image is not None:
            image_id = image.id
            expected_build_id = image.labels.get(LABEL_BUILD_ID, "")
        if url is None:
            running = [
                c
                for c in engine.containers_with_labels(
                    {LABEL_MANAGED: "true", LABEL_IMAGE: settings.image}
                )
                if c.status == "running"
            ]
            if not running:
                raise PreconditionError(
                    f"no shipit container of {settings.image} is running",
                    "start one with `shipit run`, or pass the URL to test",
                )
            url = running[0].labels.get(LABEL_URL, site_url(settings.host, settings.port))
    if url is None:
        raise PreconditionError(
            "no URL to smoke-test", "pass the URL, e.g. shipit smoke http://127.0.0.1:8080"
        )
    # No render at hand: the crawl starts from / and follows links.
    report = run_smoke(url.rstrip("/"), expected_build_id, crawl_timeout=settings.crawl_timeout)
    if report.ok and image_id:
        record_smoke_passed(settings, image_id, expected_build_id, url, report.checks)
    _attach_screenshot(report, screenshot_request, progress)
    return report
