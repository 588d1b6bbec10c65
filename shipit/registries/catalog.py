"""The registries a project publishes to, in order: ECR, Docker Hub, then each [[registries]]
table of shipit.toml; and `--to NAME[,NAME...]|all` read once into a selection of them.

Each row is data (`RegistrySpec`: the name, host, repository, label, credential variables and
hints); `registry_of` gives it its kind's behaviour (registries/ecr_registry.py,
registries/oci.py). This is the one place a registry is told apart by its name: Docker Hub is
an OCI registry whose label, variables and hints are written here.

Pure: nothing here asks AWS, the engine or a registry; the kinds do when a push or doctor
resolves them.
"""

from __future__ import annotations

from shipit.config import Settings
from shipit.errors import ConfigError
from shipit.reference import split_domain
from shipit.registries.ecr_registry import EcrRegistry
from shipit.registries.entries import ALL_REGISTRIES as ALL
from shipit.registries.entries import RegistryEntry, validate_registry_selection
from shipit.registries.oci import OciRegistry
from shipit.registries.registry import Registry, RegistrySpec

__all__ = [
    "RegistrySpec",
    "configured_registries",
    "nothing_to_push_to",
    "registry_of",
    "select_registries",
]

# Docker Hub's own variables: what its CI examples and the docs name.
DOCKERHUB_USERNAME = "DOCKERHUB_USERNAME"
DOCKERHUB_TOKEN = "DOCKERHUB_TOKEN"  # noqa: S105 - the variable's name, not a token


def _entry_spec(entry: RegistryEntry) -> RegistrySpec:
    domain, path = split_domain(entry.repository)
    host = domain or "docker.io"
    source = (
        f"environment {entry.username_env}/{entry.password_env}"
        if entry.username_env
        else "docker credential store (read-only)"
    )
    return RegistrySpec(
        name=entry.name,
        kind="oci",
        host=host,
        repository=path,
        credential_source=source,
        tag_mutability=entry.tag_mutability,
        username_env=entry.username_env,
        password_env=entry.password_env,
        variables_required=True,
        label=entry.name,
        auth_hint=f"check {entry.username_env} and {entry.password_env} (a token with push scope)"
        if entry.username_env
        else f"log in again with `docker login {host}`",
        missing_repository_hint=f"give [[registries]] {entry.name!r} a repository",
        immutable_setting=(
            f'tag_mutability = "IMMUTABLE" in the [[registries]] entry name = "{entry.name}"'
        ),
    )


def configured_registries(settings: Settings) -> tuple[RegistrySpec, ...]:
    ecr = RegistrySpec(
        name="ecr",
        kind="ecr",
        host=settings.ecr_registry,
        repository=settings.ecr_repository_name,
        credential_source="AWS (ecr:GetAuthorizationToken through boto3)",
        tag_mutability=settings.ecr_tag_mutability,
        label="ECR",
    )
    dockerhub = RegistrySpec(
        name="dockerhub",
        kind="oci",
        host=settings.dockerhub_registry,
        repository=settings.dockerhub_repository,
        credential_source=f"environment {DOCKERHUB_USERNAME}/{DOCKERHUB_TOKEN}, "
        "else docker credential store (read-only)",
        tag_mutability=settings.dockerhub_tag_mutability,
        username_env=DOCKERHUB_USERNAME,
        password_env=DOCKERHUB_TOKEN,
        label="Docker Hub",
        auth_hint=f"check {DOCKERHUB_USERNAME} and {DOCKERHUB_TOKEN} (an access token with "
        "write scope)",
        credentials_hint=f"set {DOCKERHUB_USERNAME} and {DOCKERHUB_TOKEN} (a Docker Hub access "
        "token, not the account password), or `docker login` once",
        missing_repository_hint="set SHIPIT_DOCKERHUB_REPOSITORY (namespace/name) or push with "
        "--to ecr",
        immutable_setting='dockerhub_tag_mutability = "IMMUTABLE"',
    )
    return (ecr, dockerhub, *(_entry_spec(entry) for entry in settings.registries))


def registry_of(spec: RegistrySpec, settings: Settings) -> Registry:
    """The registry that `spec` describes, with its kind's behaviour."""
    if spec.kind == "ecr":
        return EcrRegistry(spec, settings)
    return OciRegistry(spec)


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
