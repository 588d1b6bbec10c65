"""The image a push publishes, and the one rule for whether it may be pushed: it passed its
smoke test. A pass counts for exactly the image that passed (same image id, which pins every
byte and label) and the shipit version that tested it (a newer one may check more)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shipit.config import Settings
from shipit.digests import short_id
from shipit.errors import ConfigError, PreconditionError
from shipit.labels import (
    BUILT_BY_SHIPIT,
    LABEL_BASE_DIGEST,
    LABEL_BASE_IMAGE_ID,
    LABEL_BUILD_ID,
    LABEL_BUILDER,
    LABEL_IMAGE,
    LABEL_REVISION,
    LABEL_VERSION,
)
from shipit.state import smoke_pass_of
from shipit.tags import TagPlan, plan_for_image

if TYPE_CHECKING:
    from shipit.engine import Engine, ImageInfo
    from shipit.platforms import Platform
    from shipit.registries.manifest import Manifest

# The labels that together say "built from the same input": every rendered byte (build id),
# the same base image, the same commit.
SAME_BUILD_LABELS = (LABEL_BUILD_ID, LABEL_BASE_IMAGE_ID, LABEL_REVISION)


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image of a multi-platform push."""

    platform: Platform
    id: str
    layers: tuple[str, ...]
    # Its base's manifest in the base's registry (push/base_layers.py).
    base_digest: str = ""


@dataclass(frozen=True)
class PushImage:
    """The image to push and the tags to push it under (the tags setting, planned from the
    commit the image was built from). With `platforms`, the tags name an image index of those
    images (this one among them), each of which passed its smoke test."""

    id: str
    build_id: str
    labels: dict[str, str]
    # Uncompressed layer digests (diff ids), base first: the push reports bytes per layer.
    layers: tuple[str, ...]
    tags: TagPlan
    platforms: tuple[PlatformImage, ...] = ()

    def of_platform(self, platform: PlatformImage) -> PushImage:
        """The push of one platform's image of the index, under the same tags."""
        labels = {**self.labels, LABEL_BASE_DIGEST: platform.base_digest}
        return replace(self, id=platform.id, layers=platform.layers, labels=labels, platforms=())

    @classmethod
    def of(cls, image: ImageInfo, settings: Settings) -> PushImage:
        labels = dict(image.labels)
        built_as = labels.get(LABEL_VERSION, "")
        if not built_as:
            raise PreconditionError(
                f"image {short_id(image.id)} was not built by shipit (no version label)",
                "build it with `shipit build`",
            )
        plan = plan_for_image(
            settings.project_dir, settings.tags, labels.get(LABEL_REVISION, ""), built_as
        )
        if not plan.fixed:
            raise ConfigError(
                "no tag template of the tags setting names this commit "
                f"({', '.join(settings.tags) or 'none'}; skipped: "
                f"{'; '.join(skip.one_line() for skip in plan.skipped) or 'none'})",
                "add {sha} to tags (SHIPIT_TAGS, --tag): the engine pushes under a tag that "
                "does not move, and moving tags follow it",
            )
        return cls(
            id=image.id,
            build_id=labels.get(LABEL_BUILD_ID, ""),
            labels=labels,
            layers=image.layers,
            tags=plan,
        )

    @property
    def first_tag(self) -> str:
        """The tag the engine pushes; the other tags point at the manifest it leaves."""
        return self.tags.fixed[0]

    def is_served_by(self, manifest: Manifest) -> bool:
        """Whether the registry serves this very image. The local image id is the config's
        digest on the classic image store and the manifest's digest on the containerd
        store; either pins every byte."""
        return self.id in (manifest.config_digest, manifest.digest)

    @property
    def reproducible(self) -> bool:
        """Whether shipit wrote this image itself: then its bytes follow from its input (the
        same commit and settings give the same image id on any machine), and a registry that
        holds an image of the same input holds this very image. One that `docker build`
        made, or an older shipit, carries the build's time instead."""
        return self.labels.get(LABEL_BUILDER) == BUILT_BY_SHIPIT

    def same_build_as(self, config: Mapping[str, Any]) -> bool:
        """Whether an image config (from a registry) was built from this image's input: a
        rebuild of the same commit by `docker build` differs only in its timestamps."""
        runtime = config.get("config")
        labels = runtime.get("Labels") if isinstance(runtime, dict) else None
        if not isinstance(labels, dict):
            return False
        return all(
            bool(self.labels.get(key)) and labels.get(key) == self.labels.get(key)
            for key in SAME_BUILD_LABELS
        )


def image_to_push(settings: Settings, engine: Engine, *, skip_smoke: bool) -> PushImage:
    """`shipit push`'s image: the newest build, which must have passed its smoke test."""
    found = engine.image(f"{settings.image}:latest")
    if found is None:
        raise PreconditionError(
            f"no image {settings.image}:latest has been built here",
            "run `shipit ship` or `shipit build` first",
        )
    image = PushImage.of(found, settings)
    if not skip_smoke and smoke_pass_of(settings, image.id) is None:
        raise PreconditionError(
            f"image {short_id(image.id)} ({settings.image}:latest) has not passed a smoke test "
            "with this shipit version",
            "run `shipit run` to smoke-test it (or `shipit ship`), or pass --skip-smoke",
        )
    return image


def with_platforms(
    image: PushImage, settings: Settings, engine: Engine, *, skip_smoke: bool
) -> PushImage:
    """`shipit push`'s image with the other platforms' images of its build, when the settings
    name several platforms: each built from the same input and commit, and smoke-tested."""
    from shipit.base_image import platform_of, platforms_to_build

    chosen = platforms_to_build(settings, engine)
    if chosen is None or len(chosen) < 2:
        return image
    candidates = [
        found
        for found in engine.images_with_label(LABEL_BUILD_ID, image.build_id)
        if found.labels.get(LABEL_REVISION) == image.labels.get(LABEL_REVISION)
        and found.labels.get(LABEL_IMAGE) == settings.image
    ]
    platforms = []
    for platform in chosen:
        found = next((each for each in candidates if platform.matches(platform_of(each))), None)
        if found is None:
            raise PreconditionError(
                f"no {platform} image of build {image.build_id} has been built here",
                f"run `shipit ship --platform {','.join(str(each) for each in chosen)}` "
                "or `shipit build` with the same platforms first",
            )
        if not skip_smoke and smoke_pass_of(settings, found.id) is None:
            raise PreconditionError(
                f"the {platform} image {short_id(found.id)} has not passed a smoke test with "
                "this shipit version",
                "run `shipit ship` to smoke-test every platform, or pass --skip-smoke",
            )
        platforms.append(
            PlatformImage(platform, found.id, found.layers, found.labels.get(LABEL_BASE_DIGEST, ""))
        )
    return replace(image, platforms=tuple(platforms))
