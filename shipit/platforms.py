"""Platforms as docker and buildx spell them (`linux/amd64`, `linux/arm64`, `linux/arm/v7`), and
which of them a build makes: the `--platform` flag, the `platforms` setting, `SHIPIT_PLATFORMS`.

One spelling rule and one matching rule, both docker's (containerd's `platforms` package): a
name is lower-cased and its aliases become the Go names (`aarch64` is `arm64`, `x86_64` is
`amd64`), and a missing variant means the architecture's usual one (arm64 is arm64/v8, arm is
arm/v7, amd64 is amd64/v1), so `linux/arm64` finds an index entry that says `arm64/v8`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from shipit.errors import PlatformError, UsageError

EVERY = "all"
SPELLING = "os/architecture[/variant]"
EXAMPLES = "linux/amd64, linux/arm64 or linux/arm/v7"
_PART = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_PART_NAMES = ("os", "architecture", "variant")
_OS_ALIASES = {"macos": "darwin"}
# Aliases docker accepts for an architecture, as (architecture, variant): uname's names and
# Debian's.
_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "i386": ("386", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
}
# The variant an architecture has when none is written.
_USUAL_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}
_VARIANT_ALIASES = {"v8.0": "v8", "v9.0": "v9"}


def _variant(text: str) -> str:
    """'8' and 'v8' are one variant, as docker reads them."""
    if text and text[0].isdigit():
        text = "v" + text
    return _VARIANT_ALIASES.get(text, text)


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def named(cls, os: str, architecture: str, variant: str = "") -> Self:
        """The platform with docker's names: lower case, aliases resolved."""
        os = os.strip().lower()
        architecture = architecture.strip().lower()
        architecture, implied = _ARCH_ALIASES.get(architecture, (architecture, ""))
        return cls(
            _OS_ALIASES.get(os, os), architecture, _variant(variant.strip().lower()) or implied
        )

    @classmethod
    def parse(cls, text: str) -> Self:
        """'linux/arm64', 'linux/arm/v7', 'linux/arm64/v8': os/architecture[/variant]."""
        text = text.strip()
        parts = text.lower().split("/")
        if len(parts) < 2:
            raise _malformed(text, "it has no architecture")
        if len(parts) > 3:
            raise _malformed(text, f"it has {len(parts)} parts, and at most 3 are allowed")
        for name, part in zip(_PART_NAMES, parts, strict=False):
            if not part:
                raise _malformed(text, f"its {name} is empty")
            if not _PART.fullmatch(part):
                raise _malformed(
                    text, f"its {name} {part!r} holds more than letters, digits, '.', '_' and '-'"
                )
        return cls.named(*parts)

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> Self:
        """The platform an OCI index entry's "platform" object or an image config names (its
        "os", "architecture" and "variant"); a missing os or architecture is "unknown", as
        the entries that carry a build's attestations say."""

        def field(name: str, missing: str) -> str:
            value = fields.get(name)
            return str(value) if value else missing

        return cls.named(
            field("os", "unknown"), field("architecture", "unknown"), field("variant", "")
        )

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    @property
    def is_unknown(self) -> bool:
        """An index entry that is no image (buildx's attestation manifests say unknown/unknown)."""
        return self.os == "unknown" and self.architecture == "unknown"

    def _key(self) -> tuple[str, str, str]:
        named = Platform.named(self.os, self.architecture, self.variant)
        usual = _USUAL_VARIANT.get(named.architecture, "")
        return named.os, named.architecture, named.variant or usual

    def matches(self, offered: Platform) -> bool:
        """Whether `offered` (an index entry, an image) is this platform, as docker matches a
        pull's --platform: linux/arm64 is linux/arm64/v8, linux/arm is linux/arm/v7."""
        return self._key() == offered._key()

    def descriptor(self) -> dict[str, str]:
        """The "platform" object of an OCI image index entry."""
        fields = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            fields["variant"] = self.variant
        return fields


def _malformed(text: str, why: str) -> PlatformError:
    return PlatformError(
        f"platform {text!r} is not {SPELLING}: {why}", f"write it as docker does, e.g. {EXAMPLES}"
    )


def _unique(platforms: Iterable[Platform]) -> tuple[Platform, ...]:
    """Each platform once (linux/arm64 and linux/arm64/v8 are one), the first spelling kept."""
    kept: list[Platform] = []
    for platform in platforms:
        if not any(platform.matches(seen) for seen in kept):
            kept.append(platform)
    return tuple(kept)


def _listed(platforms: Iterable[Platform]) -> str:
    return ", ".join(str(platform) for platform in platforms)


@dataclass(frozen=True)
class PlatformChoice:
    """The platforms a build makes. Empty: the engine's own platform, as without the setting;
    `every`: every platform the base image offers."""

    platforms: tuple[Platform, ...] = ()
    every: bool = False

    @classmethod
    def parse(cls, values: Sequence[str]) -> Self:
        """From --platform (repeatable, each comma-separated) or the setting's list: platforms,
        or `all` alone; each platform once, in the order given."""
        items = [item.strip() for value in values for item in value.split(",")]
        if any(not item for item in items):
            raise PlatformError(
                f"the platform list {','.join(values)!r} has an empty item",
                f"separate platforms with single commas, e.g. {EXAMPLES.replace(' or ', ', ')}",
            )
        if any(item.lower() == EVERY for item in items):
            if any(item.lower() != EVERY for item in items):
                raise PlatformError(
                    f"the platform list {','.join(values)!r} mixes {EVERY!r} with platforms",
                    f"give either {EVERY} (every platform of the base image) or platforms",
                )
            return cls(every=True)
        return cls(_unique(Platform.parse(item) for item in items))

    @property
    def names(self) -> tuple[str, ...]:
        """The choice as the user writes it: ('all',), the platforms, or () for the default."""
        return (EVERY,) if self.every else tuple(str(platform) for platform in self.platforms)

    @property
    def several(self) -> bool:
        return self.every or len(self.platforms) > 1

    def resolve(
        self, offered: Sequence[Platform], engine_platform: Platform, base: str
    ) -> tuple[Platform, ...]:
        """The platforms to build from the base image `base`, which offers `offered` (an
        index's entries in its order; one entry for a base that is no index), each as the base
        names it: the user's, in the user's order; for `all`, the base's, in its order; by
        default the engine's own, or a single-platform base's one platform, as a build without
        the setting makes. A platform the base lacks is a PlatformError that names the ones
        it offers."""
        images = _unique(platform for platform in offered if not platform.is_unknown)
        if not images:
            raise PlatformError(
                f"base image {base} names no platform",
                f"check the base image (`docker buildx imagetools inspect {base}`)",
            )
        if self.every or (not self.platforms and len(images) == 1):
            return images
        wanted = self.platforms or (engine_platform,)
        found = {
            platform: next((image for image in images if platform.matches(image)), None)
            for platform in wanted
        }
        missing = [platform for platform, image in found.items() if image is None]
        if len(images) == 1 and (missing or len(wanted) > 1):
            raise PlatformError(
                f"base image {base} is a single-platform image ({images[0]}), so it cannot give "
                f"{_listed(wanted)}",
                f"build {images[0]} only (--platform {images[0]}), or use a multi-platform base "
                "image (an OCI image index, as Docker Hub's nginx is)",
            )
        if missing and not self.platforms:
            raise PlatformError(
                f"base image {base} has no image for this engine's platform {engine_platform}; "
                f"it offers {_listed(images)}",
                f"choose among those with --platform or the platforms setting, or use a base "
                f"image built for {engine_platform}",
            )
        if missing:
            raise PlatformError(
                f"base image {base} has no {_listed(missing)}; it offers {_listed(images)}",
                "choose among those with --platform or the platforms setting, or use a base "
                f"image built for {_listed(missing)}",
            )
        return tuple(image for image in found.values() if image is not None)

    def one_to_run(self, engine_platform: Platform) -> Platform:
        """The one platform `run` serves: the engine's own when the choice names it (or names
        none, or all), else the first one named."""
        if self.every or not self.platforms:
            return engine_platform
        return next(
            (platform for platform in self.platforms if platform.matches(engine_platform)),
            self.platforms[0],
        )

    def require_one(self, command: str, flag: str) -> None:
        """`command` serves one platform: a flag that names several is a usage error (the
        setting may name several, of which one_to_run picks one)."""
        if not self.several:
            return
        named = "every platform of the base image" if self.every else _listed(self.platforms)
        raise UsageError(
            f"{command} serves one platform, and {flag} names {named}",
            f"name one, e.g. {flag} linux/arm64 (ship builds and smoke-tests several)",
        )
