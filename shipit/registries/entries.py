"""The registry settings of shipit.toml: the names a registry goes by (`--to`, `to`), tag
mutability, and the [[registries]] tables, each read into a RegistryEntry.

Read by shipit/config.py while it loads the settings; the catalogue (registries/catalog.py)
turns each entry into a registry. Imports nothing of shipit's but errors and reference, so
that config.py can import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shipit.errors import ConfigError
from shipit.reference import parse_name

TAG_MUTABILITIES = ("MUTABLE", "IMMUTABLE")


# Words that mark a key of shipit.toml (a setting, or a key of a [[registries]] table) as a
# credential, which does not belong in a file that gets committed.
CREDENTIAL_WORDS = ("token", "password", "secret", "access_key")


def validate_mutability(value: str) -> str:
    upper = value.upper()
    if upper not in TAG_MUTABILITIES:
        raise ConfigError(f"tag mutability {value!r} is not valid", "use MUTABLE or IMMUTABLE")
    return upper


RESERVED_REGISTRY_NAMES = ("ecr", "dockerhub", "all")
ALL_REGISTRIES = "all"
_REGISTRY_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def validate_registry_selection(names: Iterable[str], what: str) -> tuple[str, ...]:
    """Registry names as `--to` or the `to` setting gives them: lower-cased, each once, and
    either `all` alone or names; whether each name is configured is the catalog's to say."""
    chosen: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name and name not in chosen:
            chosen.append(name)
    if ALL_REGISTRIES in chosen and len(chosen) > 1:
        raise ConfigError(
            f"{what} {','.join(chosen)!r} mixes 'all' with names",
            "give either all or a list of names",
        )
    bad = [name for name in chosen if not _REGISTRY_NAME_RE.match(name)]
    if bad:
        raise ConfigError(
            f"{what} {bad[0]!r} is not a registry name",
            "give ecr, dockerhub, a [[registries]] name or all, separated by commas",
        )
    return tuple(chosen)


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXAMPLE_ENV = {"username_env": "GHCR_USER", "password_env": "GHCR_TOKEN"}
_REGISTRY_KEYS = ("name", "repository", "username_env", "password_env", "tag_mutability")


@dataclass(frozen=True)
class RegistryEntry:
    """One [[registries]] table: any OCI registry beside ECR and Docker Hub."""

    # Each field's `doc` is its line in docs/settings.md.
    name: str = field(
        metadata={
            "doc": "the name --to and `to` use: 1-32 of a-z 0-9 - _, not ecr, dockerhub or all"
        }
    )
    repository: str = field(
        metadata={"doc": "full name with the registry host, e.g. ghcr.io/acme/site"}
    )
    username_env: str = field(
        default="",
        metadata={
            "doc": "environment variable holding the user name (with password_env; "
            "without both, what `docker login` stored is used)"
        },
    )
    password_env: str = field(
        default="", metadata={"doc": "environment variable holding the password or token"}
    )
    tag_mutability: str = field(
        default="MUTABLE",
        metadata={"doc": "whether its tags may move: MUTABLE or IMMUTABLE"},
    )

    def as_dict(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in _REGISTRY_KEYS}


def _registry_entry(raw: Any, index: int, origin: str, seen: set[str]) -> RegistryEntry:
    where = f"{origin}: [[registries]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where} is not a table", "write each registry as a [[registries]] table"
        )
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{origin}: registry {name!r}"
    for key in raw:
        if key not in _REGISTRY_KEYS:
            secret = any(word in key.lower() for word in CREDENTIAL_WORDS)
            raise ConfigError(
                f"{where}: unknown key '{key}'"
                + (
                    ", and credentials do not belong in a file that gets committed"
                    if secret
                    else ""
                ),
                "name the environment variables that hold them with username_env and password_env"
                if secret
                else f"known keys: {', '.join(_REGISTRY_KEYS)}",
            )
        if not isinstance(raw[key], str):
            raise ConfigError(f"{where}: {key} = {raw[key]!r} is not a string", f"quote {key}")
    if not isinstance(name, str) or not _REGISTRY_NAME_RE.match(name):
        raise ConfigError(
            f"{where}: name {name!r} is not a registry name",
            "use 1-32 lowercase letters, digits, '-' or '_', e.g. name = \"ghcr\"",
        )
    if name in RESERVED_REGISTRY_NAMES or name in seen:
        raise ConfigError(
            f"{where}: the name {name!r} is already taken",
            "ecr, dockerhub and all are shipit's own; give each [[registries]] entry its own name",
        )
    seen.add(name)
    repository = raw.get("repository", "")
    if not repository:
        raise ConfigError(
            f"{where}: repository is missing",
            'give the full name with the registry host, e.g. repository = "ghcr.io/acme/site"',
        )
    try:
        parse_name(repository, "repository")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", exc.hint) from exc
    username_env = raw.get("username_env", "")
    password_env = raw.get("password_env", "")
    if bool(username_env) != bool(password_env):
        given, wanted = (
            ("username_env", "password_env") if username_env else ("password_env", "username_env")
        )
        raise ConfigError(
            f"{where}: {given} is set but {wanted} is not",
            "set both, or neither to use the credentials `docker login` stored",
        )
    for key, variable in (("username_env", username_env), ("password_env", password_env)):
        if variable and not _ENV_NAME_RE.match(variable):
            raise ConfigError(
                f"{where}: {key} = {variable!r} is not an environment variable name",
                f"name the variable, e.g. {key} = {_EXAMPLE_ENV[key]!r}",
            )
    try:
        mutability = validate_mutability(raw.get("tag_mutability", "MUTABLE"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", exc.hint) from exc
    return RegistryEntry(name, repository, username_env, password_env, mutability)


def registry_entries(raw: Any, origin: str) -> tuple[RegistryEntry, ...]:
    if not isinstance(raw, list):
        raise ConfigError(
            f"{origin}: registries is not a list of tables",
            "write each registry as a [[registries]] table",
        )
    seen: set[str] = set()
    return tuple(_registry_entry(item, index, origin, seen) for index, item in enumerate(raw))
