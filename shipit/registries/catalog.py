"""The registries a project publishes to, in order: ECR, Docker Hub, then each [[registries]]
table of shipit.toml; and `--to NAME[,NAME...]|all` read once into a selection of them.

Pure: nothing here asks AWS, the engine or a registry. Credentials are resolved by
registries/credentials.py (ECR's by registries/ecr.py) when a push or doctor needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from shipit.registries.entries import ALL_REGISTRIES as ALL
from shipit.config import Settings
from shipit.registries.entries import RegistryEntry, validate_registry_selection
from shipit.errors import ConfigError
from shipit.reference import split_domain
from shipit.registries.credentials import (
    DOCKERHUB_TOKEN,
    DOCKERHUB_USERNAME,
    Credentials,
    dockerhub_credentials,
    entry_credentials,
)

RegistryKind = Literal["ecr", "oci"]


@dataclass(frozen=True)
class RegistrySpec:
    name: str
    kind: RegistryKind
    # "" for ECR without ecr_registry: the host comes with the authorization token.
    host: str
    repository: str  # the path inside the registry, e.g. acme/site
    credential_source: str  # where the credentials will come from, for people
    tag_mutability: str = "MUTABLE"
    username_env: str = ""
    password_env: str = ""

    @property
    def reference(self) -> str:
        """host/repository, or the repository alone while ECR's host is not known yet."""
        return f"{self.host}/{self.repository}" if self.host else self.repository

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "repository": self.repository,
            "credential_source": self.credential_source,
        }


def _entry_spec(entry: RegistryEntry) -> RegistrySpec:
    domain, path = split_domain(entry.repository)
    source = (
        f"environment {entry.username_env}/{entry.password_env}"
        if entry.username_env
        else "docker credential store (read-only)"
    )
    return RegistrySpec(
        name=entry.name,
        kind="oci",
        host=domain or "docker.io",
        repository=path,
        credential_source=source,
        tag_mutability=entry.tag_mutability,
        username_env=entry.username_env,
        password_env=entry.password_env,
    )


def configured_registries(settings: Settings) -> tuple[RegistrySpec, ...]:
    ecr = RegistrySpec(
        name="ecr",
        kind="ecr",
        host=settings.ecr_registry,
        repository=settings.ecr_repository_name,
        credential_source="AWS (ecr:GetAuthorizationToken through boto3)",
        tag_mutability=settings.ecr_tag_mutability,
    )
    dockerhub = RegistrySpec(
        name="dockerhub",
        kind="oci",
        host=settings.dockerhub_registry,
        repository=settings.dockerhub_repository,
        credential_source=f"environment {DOCKERHUB_USERNAME}/{DOCKERHUB_TOKEN}, "
        "else docker credential store (read-only)",
        tag_mutability=settings.dockerhub_tag_mutability,
    )
    return (ecr, dockerhub, *(_entry_spec(entry) for entry in settings.registries))


def _has_repository(spec: RegistrySpec, settings: Settings) -> bool:
    # ECR's repository falls back to the image name, so only the setting says it is wanted.
    return bool(settings.ecr_repository) if spec.kind == "ecr" else bool(spec.repository)


def nothing_to_push_to() -> ConfigError:
    return ConfigError(
        "no registry to push to",
        "set SHIPIT_ECR_REPOSITORY or SHIPIT_DOCKERHUB_REPOSITORY "
        "(or [[registries]] in shipit.toml)",
    )


def select_registries(
    settings: Settings, to: str | None = None, *, allow_none: bool = False
) -> tuple[RegistrySpec, ...]:
    """`--to` as given, else the `to` setting: names separated by commas, in configured
    order, or `all` (or nothing): every registry with a repository set. A registry named
    explicitly is taken as named, and its missing repository is reported when it is used.

    With none configured that is a ConfigError, unless `allow_none` (doctor reports it)."""
    known = configured_registries(settings)
    if to is None:
        names, what = settings.to, f"{settings.origins.get('to', 'shipit.toml')}: to"
    else:
        names, what = validate_registry_selection(to.split(","), "--to"), "--to"
    if not names or names == (ALL,):
        chosen = tuple(spec for spec in known if _has_repository(spec, settings))
        if not chosen and not allow_none:
            raise nothing_to_push_to()
        return chosen
    by_name = {spec.name: spec for spec in known}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(
            f"{what} names {', '.join(repr(name) for name in unknown)}, which "
            + ("is not a configured registry" if len(unknown) == 1 else "are not configured"),
            f"known: {', '.join(by_name)}, all (more come from [[registries]] in shipit.toml)",
        )
    return tuple(spec for spec in known if spec.name in names)


def credentials_of(spec: RegistrySpec, environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials of an OCI registry (not ECR: ask registries/ecr.py for its token)."""
    if spec.kind == "ecr":
        raise ValueError("ECR's credentials come from registries/ecr.py")
    if spec.name == "dockerhub":
        return dockerhub_credentials(spec.host, environ)
    return entry_credentials(spec.name, spec.host, spec.username_env, spec.password_env, environ)
