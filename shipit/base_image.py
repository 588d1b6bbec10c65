"""Which base image a build uses: the one asked for, pulled when it is not here; or, when
nobody asked for one and the default official image cannot be pulled (no registry can be
reached), the local base image. render, build, run and doctor all decide by this rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shipit.config import LOCAL_BASE_IMAGE, Settings
from shipit.errors import EngineError
from shipit.progress import Progress

if TYPE_CHECKING:
    from shipit.engine import Engine


@dataclass(frozen=True)
class BaseImage:
    reference: str
    image_id: str
    how: Literal["present", "pulled", "fallback"]
    note: str = ""


def resolve_base_image(settings: Settings, engine: Engine, progress: Progress) -> BaseImage:
    wanted = settings.base_image
    base = engine.image(wanted)
    if base is not None:
        return BaseImage(wanted, base.id, "present")
    progress(f"base image {wanted} is not here; pulling it")
    try:
        engine.pull(wanted, progress)
    except EngineError as exc:
        fallback = engine.image(LOCAL_BASE_IMAGE)
        if settings.base_image_may_fall_back and fallback is not None:
            note = (
                f"cannot pull {wanted} ({exc.message}); using the local base image "
                f"{LOCAL_BASE_IMAGE} instead"
            )
            progress(note)
            return BaseImage(LOCAL_BASE_IMAGE, fallback.id, "fallback", note)
        raise EngineError(
            f"base image {wanted} is not present and cannot be pulled ({exc.message})",
            f"pull it by hand, or use a local one: --base-image {LOCAL_BASE_IMAGE} "
            "(scripts/testenv.sh builds it)",
        ) from exc
    pulled = engine.image(wanted)
    if pulled is None:
        raise EngineError(f"pulled {wanted} but the engine does not list it")
    return BaseImage(wanted, pulled.id, "pulled")
