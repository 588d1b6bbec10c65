"""Which base image a build uses: the one asked for, pulled when it is not here; or, when
nobody asked for one and the default official image cannot be pulled (no registry can be
reached), the local base image. render, build, run and doctor all decide by this rule."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shipit.config import LOCAL_BASE_IMAGE, Settings
from shipit.errors import EngineError
from shipit.progress import Progress

if TYPE_CHECKING:
    from shipit.engine import Engine, ImageInfo
    from shipit.platforms import Platform
    from shipit.registries.base_index import BaseIndex


@dataclass(frozen=True)
class BaseImage:
    reference: str
    image_id: str
    how: Literal["present", "pulled", "fallback"]
    note: str = ""
    # What the base's registry serves for it (its platform's manifest, or the index the
    # engine pulled it from), when the base came from a registry: the push copies its layers
    # from there.
    manifest_digest: str = ""


def resolve_base_image(
    settings: Settings, engine: Engine, progress: Progress, platform: Platform | None = None
) -> BaseImage:
    """The base image of the engine's own platform, or, with `platform`, of that one."""
    if platform is not None:
        return _base_for_platform(settings, engine, platform, progress)
    wanted = settings.base_image
    base = engine.image(wanted)
    if base is not None:
        return BaseImage(wanted, base.id, "present", manifest_digest=registry_digest(base, wanted))
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
    return BaseImage(wanted, pulled.id, "pulled", manifest_digest=registry_digest(pulled, wanted))


def platform_of(image: ImageInfo) -> Platform:
    from shipit.platforms import Platform

    return Platform.of(
        {"os": image.os, "architecture": image.architecture, "variant": image.variant}
    )


def _base_for_platform(
    settings: Settings, engine: Engine, platform: Platform, progress: Progress
) -> BaseImage:
    """The base image of `platform`: that platform's image of the base's index, pulled by its
    digest unless the engine holds it (the engine keeps one image per tag, so no tag of
    another platform's image is moved). Its manifest digest lets the push copy its layers
    from the base's registry."""
    wanted = settings.base_image
    index = base_index_of(settings, engine, f"the {platform} image")
    entry = index.manifest_for(platform)
    pinned = f"{index.repository}@{entry.digest}"
    found = engine.image(pinned)
    how: Literal["present", "pulled"] = "present"
    if found is None:
        progress(f"pulling the {platform} image of {wanted}")
        engine.pull(pinned, progress, platform=str(platform), auth_config=index.auth_config)
        found = engine.image(pinned)
        how = "pulled"
    if found is None:
        raise EngineError(f"pulled {pinned} but the engine does not list it")
    return BaseImage(wanted, found.id, how, manifest_digest=entry.digest)


# The base indexes read in this command, by the engine it runs with: a build of several
# platforms reads its base's index once, not once more for each platform.
_indexes_read: weakref.WeakKeyDictionary[Engine, dict[str, BaseIndex]] = weakref.WeakKeyDictionary()


def base_index_of(settings: Settings, engine: Engine, wanted_platforms: str) -> BaseIndex:
    """The platforms the base image offers, from its registry (asked for `wanted_platforms`);
    its registry's refusal says what was looked for."""
    from shipit.errors import ShipitError
    from shipit.registries.base_index import read_base_index

    read = _indexes_read.setdefault(engine, {})
    if settings.base_image in read:
        return read[settings.base_image]
    try:
        read[settings.base_image] = read_base_index(settings.base_image, engine.registry_rules)
        return read[settings.base_image]
    except ShipitError as error:
        local = engine.image(settings.base_image)
        here = f"; the one here is {platform_of(local)}" if local is not None else ""
        raise error.reworded(f"{error.message} (looking for {wanted_platforms}{here})") from error


def platforms_to_build(settings: Settings, engine: Engine) -> tuple[Platform, ...] | None:
    """The platforms the settings ask for, as the base image names them; None when that is
    the engine's own platform alone (a build as without the setting, whose base image may be
    the local one)."""
    choice = settings.platforms
    if not choice.every and not choice.platforms:
        return None
    native = engine.platform()
    if not choice.every and all(platform.matches(native) for platform in choice.platforms):
        return None
    asked = ", ".join(choice.names) if choice.platforms else "every platform"
    index = base_index_of(settings, engine, asked)
    return choice.resolve(index.offered, native, settings.base_image)


def platform_to_run(settings: Settings, engine: Engine) -> Platform | None:
    """The one platform `run` serves (None: the engine's own)."""
    if not settings.platforms.every and not settings.platforms.platforms:
        return None
    native = engine.platform()
    chosen = settings.platforms.one_to_run(native)
    return None if chosen.matches(native) else chosen


def registry_digest(image: ImageInfo, reference: str) -> str:
    """The digest the engine pulled `image` by from `reference`'s repository ("" for an image
    only the engine holds, made by `docker import` or a build)."""
    from shipit.reference import parse_reference

    parsed = parse_reference(reference)
    if parsed.digest:
        return parsed.digest
    for pinned in image.repo_digests:
        repository, _, digest = pinned.partition("@")
        if repository in (parsed.repository, f"docker.io/{parsed.repository}"):
            return digest
    return ""


# The nginx of templates/Dockerfile.j2's ENTRYPOINT, and what shipit learned of each base
# image's nginx, by image id (an image never changes under its id).
NGINX_BINARY = "/usr/sbin/nginx"
NGINX_MODULES_FILE = "base-nginx.json"
_KEPT_BASES = 16


def has_gzip_static(settings: Settings, engine: Engine, base: BaseImage) -> bool:
    """Whether the base image's nginx was built with the gzip_static module. The module's
    directive names (and `nginx -V`'s configure line, --with-http_gzip_static_module) are
    strings in the binary only when it is compiled in; the binary is read from a container
    that never starts (no emulation for another platform's base), once per base image."""
    from shipit.state import make_state_dir

    known_path = settings.state_dir / NGINX_MODULES_FILE
    try:
        known = json.loads(known_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(base.image_id), bool):
        return bool(known[base.image_id])
    archive = engine.image_file_archive(base.image_id, NGINX_BINARY)
    found = archive is not None and b"gzip_static" in archive
    known = dict(list(known.items())[-(_KEPT_BASES - 1) :])
    known[base.image_id] = found
    try:
        make_state_dir(settings.state_dir)
        known_path.write_text(json.dumps(known, indent=2), encoding="utf-8")
    except OSError:
        pass  # a read-only project asks again next time
    return found
