"""The image a push publishes, and the one rule for whether it may be pushed: it passed its
smoke test. A pass counts for exactly the image that passed (same image id, which pins every
byte and label) and the shipit version that tested it (a newer one may check more)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipit.config import Settings
from shipit.errors import PreconditionError
from shipit.labels import LABEL_BASE_IMAGE_ID, LABEL_BUILD_ID, LABEL_REVISION, LABEL_VERSION
from shipit.state import smoke_pass_of

if TYPE_CHECKING:
    from shipit.engine import Engine, ImageInfo
    from shipit.registries.distribution import Manifest

# The labels that together say "built from the same input": every rendered byte (build id),
# the same base image, the same commit.
SAME_BUILD_LABELS = (LABEL_BUILD_ID, LABEL_BASE_IMAGE_ID, LABEL_REVISION)


@dataclass(frozen=True)
class PushImage:
    id: str
    sha_tag: str
    build_id: str
    labels: dict[str, str]
    # Uncompressed layer digests (diff ids), base first: the push reports bytes per layer.
    layers: tuple[str, ...]

    @classmethod
    def of(cls, image: ImageInfo) -> PushImage:
        labels = dict(image.labels)
        return cls(
            id=image.id,
            sha_tag=labels.get(LABEL_VERSION, ""),
            build_id=labels.get(LABEL_BUILD_ID, ""),
            labels=labels,
            layers=image.layers,
        )

    def is_served_by(self, manifest: Manifest) -> bool:
        """Whether the registry serves this very image. The local image id is the config's
        digest on the classic image store and the manifest's digest on the containerd
        store; either pins every byte."""
        return self.id in (manifest.config_digest, manifest.digest)

    def same_build_as(self, config: Mapping[str, Any]) -> bool:
        """Whether an image config (from a registry) was built from this image's input: a
        rebuild of the same commit elsewhere differs only in its timestamps."""
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
    image = PushImage.of(found)
    if not image.sha_tag:
        raise PreconditionError(
            f"{settings.image}:latest was not built by shipit (no version label)",
            "build it with `shipit build`",
        )
    if not skip_smoke and smoke_pass_of(settings, image.id) is None:
        raise PreconditionError(
            f"image {image.id[7:19]} ({settings.image}:latest) has not passed a smoke test "
            "with this shipit version",
            "run `shipit run` to smoke-test it (or `shipit ship`), or pass --skip-smoke",
        )
    return image
