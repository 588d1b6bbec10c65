"""A base image's platforms as its registry lists them: the index (or the one manifest) that
its reference names, read through base_source.py (the user's docker credentials read only,
else anonymous). Nothing here writes to the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shipit.errors import ConfigError, PlatformError
from shipit.platforms import Platform
from shipit.reference import parse_reference
from shipit.registries.base_source import base_source
from shipit.registries.credentials import stored_credentials
from shipit.registries.transport import RegistryRules, rules_for


@dataclass(frozen=True)
class BaseManifest:
    """One platform's entry of the base's index: the manifest to pull or copy for it, by
    digest, so every platform's build starts from what the index named when it was read."""

    platform: Platform
    digest: str


@dataclass(frozen=True)
class BaseIndex:
    """What the base reference names in its registry: one manifest per platform."""

    reference: str
    repository: str  # as the engine pulls it: domain and path
    manifests: tuple[BaseManifest, ...]
    auth_config: dict[str, str]

    @property
    def offered(self) -> tuple[Platform, ...]:
        return tuple(entry.platform for entry in self.manifests)

    def manifest_for(self, platform: Platform) -> BaseManifest:
        for entry in self.manifests:
            if platform.matches(entry.platform):
                return entry
        offered = ", ".join(str(entry) for entry in self.offered) or "none"
        raise PlatformError(
            f"base image {self.reference} has no {platform} image (it offers {offered})",
            "choose one of those platforms (--platform), or a base image that has this one",
        )


def read_base_index(reference: str, engine_rules: Callable[[], RegistryRules]) -> BaseIndex:
    """The platforms of `reference` in its registry (attestations left out)."""
    parsed = parse_reference(reference, "base image")
    with base_source(
        reference, rules=rules_for(parsed.domain or "docker.io", engine_rules)
    ) as source:
        manifest = source.manifest()
        if manifest.is_index:
            entries = tuple(
                BaseManifest(Platform.of(entry.platform), entry.digest)
                for entry in manifest.entries()
                if entry.platform is not None and not entry.is_attestation
            )
        else:
            config = source.config(manifest)
            entries = (BaseManifest(Platform.of(config), manifest.digest),)
        login = stored_credentials(source.host)
    if not entries:
        raise ConfigError(
            f"base image {reference} names no image of any platform in its registry",
            "choose another base image",
        )
    return BaseIndex(
        reference=reference,
        repository=parsed.repository,
        manifests=entries,
        auth_config=login.auth_config() if login is not None else {},
    )
