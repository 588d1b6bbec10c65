"""Settings: defaults, then shipit.toml (or [tool.shipit] in pyproject.toml), then SHIPIT_*
environment variables, then command-line flags, later ones winning. Each value remembers
where it came from so that `shipit config` can say so.

Credentials are deliberately not settings: a token in a file that gets committed is the
plaintext-credential mistake shipit exists to prevent.
"""

from __future__ import annotations

import configparser
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shipit.errors import ConfigError
from shipit.platforms import PlatformChoice
from shipit.reference import is_valid_host, parse_name, parse_reference
from shipit.regions import REGION
from shipit.registries.entries import (
    CREDENTIAL_WORDS,
    RegistryEntry,
    registry_entries,
    validate_mutability,
    validate_registry_selection,
)
from shipit.tags import DEFAULT_TAGS, validate_templates

DEFAULT_BASE_IMAGE = "nginx:1.27.3-bookworm"
# Built by scripts/testenv.sh from Debian packages where the official image cannot be pulled.
LOCAL_BASE_IMAGE = "shipit-local/nginx:bookworm"
DEFAULT_DOCKERHUB_REGISTRY = "docker.io"
CONFIG_FILE = "shipit.toml"

_KIND_NAMES = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    tuple: "a list of strings",
}
# Flags whose name is not the setting's: --tag is repeated, once per template.
_FLAGS = {"tags": "--tag", "ecr_cache": "--no-cache", "platforms": "--platform"}


def setting_flag(name: str) -> str:
    """The command-line flag that sets the setting `name` (on the commands that take it)."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def validate_repository(value: str, what: str = "image name") -> str:
    parse_name(value, what)
    return value


def split_reference(reference: str) -> tuple[str, str]:
    """'host:5000/name:tag' -> ('host:5000/name', 'tag'), no tag means 'latest'; a pinned
    'name:tag@sha256:...' -> ('name', 'sha256:...'), since the digest decides what is pulled."""
    parsed = parse_reference(reference)
    return parsed.repository, parsed.pull_version


def validate_reference(value: str) -> str:
    parse_reference(value)
    return value


def _validate_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"port {value} is out of range", "choose a port from 1 to 65535")
    return value


def _validate_region(value: str) -> str:
    if not REGION.fullmatch(value):
        raise ConfigError(
            f"AWS region {value!r} is not a region name", "use a region such as 'us-east-1'"
        )
    return value


BUILDERS = ("auto", "docker")
UPLOADERS = ("auto", "engine")


def _validate_builder(value: str) -> str:
    if value.lower() not in BUILDERS:
        raise ConfigError(f"builder {value!r} is not valid", "use auto or docker")
    return value.lower()


def _validate_uploader(value: str) -> str:
    if value.lower() not in UPLOADERS:
        raise ConfigError(f"uploader {value!r} is not valid", "use auto or engine")
    return value.lower()


def _validate_host(value: str) -> str:
    if not is_valid_host(value):
        raise ConfigError(
            f"registry host {value!r} is not a host name",
            "use host[:port], e.g. '127.0.0.1:5000' or '[::1]:5000'",
        )
    return value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(value: str | int) -> int:
    """Bytes from '10GB', '500 MB', '2GiB' or a plain number of bytes."""
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ConfigError(
            f"size {value!r} is not a size", "use a number of bytes or e.g. '500MB', '10GB'"
        )
    number, unit = match.group(1), (match.group(2) or "").lower()
    scale = _SIZE_UNITS[unit[:1]]
    if "i" in unit:
        scale = 1024 ** "bkmgt".index(unit[0])
    size = int(float(number) * scale)
    if size <= 0:
        raise ConfigError(f"size {value!r} must be greater than zero", "use a positive size")
    return size


def _validate_cache_setting(value: str) -> str:
    """ecr_cache: "auto" (on, except in CI), "on" or "off"."""
    text = value.strip().lower()
    if text in ("auto", "on", "off"):
        return text
    if text in ("1", "true", "yes"):
        return "on"
    if text in ("0", "false", "no"):
        return "off"
    raise ConfigError(
        f"ecr_cache {value!r} is not auto, on or off",
        'use "auto" (on, except where CI is set), "on" or "off"',
    )


def _validate_positive(value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{value} must be greater than zero", "use a positive number")
    return value


def _validate_not_negative(value: float) -> float:
    if value < 0:
        raise ConfigError(f"{value} is negative", "use 0 or a positive number")
    return value


@dataclass(frozen=True)
class SettingSpec:
    name: str
    kind: type
    default: Any
    help: str
    env: tuple[str, ...] = ()
    validate: Callable[[Any], Any] | None = None
    # What the default means where `default` alone does not say it (an empty value that
    # shipit fills in from elsewhere); docs/settings.md prints it.
    default_help: str = ""

    @property
    def env_names(self) -> tuple[str, ...]:
        return (f"SHIPIT_{self.name.upper()}", *self.env)


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "image",
        str,
        "shipit-site",
        "name of the local image; also the ECR repository's when ecr_repository is not set",
        validate=validate_repository,
    ),
    SettingSpec(
        "base_image",
        str,
        DEFAULT_BASE_IMAGE,
        "nginx base image the Dockerfile builds on; a reference, optionally pinned by digest",
        validate=validate_reference,
    ),
    SettingSpec(
        "host",
        str,
        "127.0.0.1",
        "address the container is published on, on the engine's machine",
        default_help="127.0.0.1; 0.0.0.0 on a remote engine",
    ),
    SettingSpec("port", int, 8080, "port the container is published on", validate=_validate_port),
    SettingSpec(
        "reach_host",
        str,
        "",
        "address at which this machine reaches the published port (NAT, a tunnel)",
        default_help="the engine's host for a remote engine, else host (127.0.0.1 for 0.0.0.0)",
    ),
    SettingSpec(
        "ready_timeout",
        float,
        30.0,
        "seconds `run` waits for the site to answer /healthz",
        validate=_validate_positive,
    ),
    SettingSpec(
        "crawl_timeout",
        float,
        30.0,
        "seconds the smoke test's crawl of every page and asset may take; what is left "
        "unchecked then fails it",
        validate=_validate_positive,
    ),
    SettingSpec(
        "ecr_repository",
        str,
        "",
        "ECR repository name; setting it makes ECR one of the registries pushed to",
        validate=lambda v: validate_repository(v, "ECR repository") if v else v,
        default_help="the image name, when ECR is chosen with --to",
    ),
    SettingSpec(
        "ecr_registry",
        str,
        "",
        "registry host to push to instead of the endpoint the ECR token names",
        validate=lambda v: _validate_host(v) if v else v,
        default_help="the ECR token's endpoint",
    ),
    SettingSpec(
        "ecr_tag_mutability",
        str,
        "MUTABLE",
        "tag mutability of a created ECR repository: MUTABLE or IMMUTABLE",
        validate=validate_mutability,
    ),
    SettingSpec("ecr_create_repository", bool, True, "create the ECR repository when missing"),
    SettingSpec("ecr_scan_on_push", bool, True, "scan on push for a created ECR repository"),
    SettingSpec(
        "ecr_cache",
        str,
        "auto",
        "keep ECR tokens for reuse in the user's cache folder: auto (on, except where CI is "
        "set), on or off (--no-cache)",
        validate=_validate_cache_setting,
    ),
    SettingSpec(
        "aws_region",
        str,
        "",
        "AWS region of the ECR repository",
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
        validate=lambda v: _validate_region(v) if v else v,
        default_help="the region of the AWS profile in use (AWS_PROFILE, ~/.aws/config)",
    ),
    SettingSpec(
        "dockerhub_repository",
        str,
        "",
        "Docker Hub repository, namespace/name; setting it makes Docker Hub one of the "
        "registries pushed to",
        validate=lambda v: validate_repository(v, "Docker Hub repository") if v else v,
    ),
    SettingSpec(
        "dockerhub_registry",
        str,
        DEFAULT_DOCKERHUB_REGISTRY,
        "registry host of the dockerhub registry: Docker Hub or any OCI registry",
        validate=_validate_host,
    ),
    SettingSpec(
        "dockerhub_tag_mutability",
        str,
        "MUTABLE",
        "whether tags in the dockerhub registry may move: MUTABLE or IMMUTABLE",
        validate=validate_mutability,
    ),
    SettingSpec(
        "engine_timeout",
        float,
        120.0,
        "seconds a push may make no progress (the Docker engine silent, or a registry taking "
        "none of shipit's upload) before shipit gives up on that attempt",
        validate=_validate_positive,
    ),
    SettingSpec(
        "tags",
        tuple,
        DEFAULT_TAGS,
        "tag templates for the pushed image: {sha} {sha_long} {branch} {version} {major} "
        "{minor} {patch} {date} and literal text",
        validate=validate_templates,
    ),
    SettingSpec(
        "max_site_size",
        str,
        "10GB",
        "largest site (site/ and templates/) render and build accept, in bytes or with a "
        "unit ('500MB', '2GiB'); a larger one is refused before any file is read",
        validate=parse_size,
    ),
    SettingSpec(
        "platforms",
        tuple,
        (),
        "platforms to build, as docker spells them (os/architecture[/variant]: linux/amd64, "
        "linux/arm64, linux/arm/v7), or all: every platform the base image offers; run serves "
        "one of them: the engine's own when named, else the first",
        validate=PlatformChoice.parse,
        default_help="the engine's own platform",
    ),
    SettingSpec(
        "builder",
        str,
        "auto",
        "auto: write the image directly when the Dockerfile only sets image settings and "
        "copies the site (else docker build); docker: always docker build",
        validate=_validate_builder,
    ),
    SettingSpec(
        "uploader",
        str,
        "auto",
        "auto: shipit uploads the image itself from a local engine (with the containerd "
        "image store, an image it wrote itself; else the engine pushes); engine: the engine "
        "always pushes",
        validate=_validate_uploader,
    ),
    SettingSpec(
        "lock_timeout",
        float,
        600.0,
        "seconds a command waits for another shipit command that is using the same project "
        "(0: do not wait)",
        validate=_validate_not_negative,
    ),
    SettingSpec(
        "to",
        tuple,
        (),
        "registries push, ship and doctor use without --to: names (ecr, dockerhub, each "
        "[[registries]] name) or all",
        validate=lambda v: validate_registry_selection(v, "to"),
        default_help="every registry with a repository set",
    ),
    SettingSpec(
        "signing_key",
        str,
        "",
        "key that signs the pushed image and its attestations, in cosign's layout: a PEM "
        "ECDSA P-256 private key (passphrase in SHIPIT_SIGNING_PASSWORD), a cosign.key "
        "(COSIGN_PASSWORD) or awskms:///ALIAS-OR-ARN; a relative path is the project's",
        default_help="none: the image is pushed unsigned",
    ),
    SettingSpec(
        "push_attempts",
        int,
        4,
        "attempts per push when a registry fails transiently",
        validate=lambda v: int(_validate_positive(v)),
    ),
)
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    image: str
    base_image: str
    host: str
    port: int
    reach_host: str
    ready_timeout: float
    ecr_repository: str
    ecr_registry: str
    ecr_tag_mutability: str
    ecr_create_repository: bool
    ecr_scan_on_push: bool
    aws_region: str
    dockerhub_repository: str
    dockerhub_registry: str
    dockerhub_tag_mutability: str
    engine_timeout: float
    push_attempts: int
    tags: tuple[str, ...]
    registries: tuple[RegistryEntry, ...] = ()
    max_site_size: int = 10 * 1000**3
    crawl_timeout: float = 30.0
    builder: str = "auto"
    uploader: str = "auto"
    ecr_cache: str = "auto"
    lock_timeout: float = 600.0
    to: tuple[str, ...] = ()
    signing_key: str = ""
    platforms: PlatformChoice = field(default_factory=PlatformChoice)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    # The settings the user set (file, environment or flag) rather than left at default.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def base_image_may_fall_back(self) -> bool:
        """Whether a build may use the local base image when the default cannot be pulled:
        only when nobody asked for a base image."""
        return "base_image" not in self.explicit

    @property
    def site_dir(self) -> Path:
        return self.project_dir / "site"

    @property
    def templates_dir(self) -> Path:
        return self.project_dir / "templates"

    @property
    def state_dir(self) -> Path:
        return self.project_dir / ".shipit"

    @property
    def ecr_repository_name(self) -> str:
        return self.ecr_repository or self.image.rsplit("/", 1)[-1]

    def as_dict(self) -> dict[str, Any]:
        values = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("origins", "explicit")
        }
        values["project_dir"] = str(self.project_dir)
        values["registries"] = [entry.as_dict() for entry in self.registries]
        values["platforms"] = self.platforms.names
        return values


def _coerce(spec: SettingSpec, raw: Any, origin: str) -> Any:
    if spec.kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    elif spec.kind is int and not isinstance(raw, bool):
        try:
            return int(str(raw).strip())
        except ValueError:
            pass
    elif spec.kind is float and not isinstance(raw, bool):
        try:
            return float(str(raw).strip())
        except ValueError:
            pass
    elif spec.kind is str and isinstance(raw, str):
        return raw.strip()
    elif spec.kind is tuple and isinstance(raw, str):
        # The environment's form: comma-separated.
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    elif (
        spec.kind is tuple
        and isinstance(raw, list | tuple)
        and all(isinstance(item, str) for item in raw)
    ):
        return tuple(item.strip() for item in raw)
    elif spec.validate is parse_size and isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)  # a size may be written as a plain number of bytes in shipit.toml
    raise ConfigError(
        f"{origin}: {spec.name} = {raw!r} is not {_KIND_NAMES[spec.kind]}",
        f"give {spec.name} {_KIND_NAMES[spec.kind]}",
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the file") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}", "fix the file") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path.name} nests too deeply to read", "flatten the file") from exc


def _file_settings(project_dir: Path) -> tuple[dict[str, Any], str]:
    config_path = project_dir / CONFIG_FILE
    if config_path.is_file():
        data = _read_toml(config_path)
        return dict(data.get("shipit", data)), CONFIG_FILE
    pyproject = project_dir / "pyproject.toml"
    if pyproject.is_file():
        table = _read_toml(pyproject).get("tool", {}).get("shipit")
        if isinstance(table, dict):
            return dict(table), "pyproject.toml [tool.shipit]"
    return {}, ""


def aws_profile(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"


def _aws_profile_region(environ: Mapping[str, str]) -> tuple[str, str]:
    """(region, origin) of the AWS profile in use, read as boto3's session reads it, without
    importing boto3 (a command that never talks to AWS should not pay for it)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    path = Path(environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config"))
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return "", ""
    profile = aws_profile(environ)
    # As botocore: "[profile NAME]", and for the default profile "[default]" too.
    sections = ("default", "profile default") if profile == "default" else (f"profile {profile}",)
    for section in sections:
        if parser.has_option(section, "region"):
            return parser.get(section, "region").strip(), f"AWS profile {profile} ({path})"
    return "", ""


def load_settings(
    project_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    project_dir = project_dir.resolve()
    values: dict[str, Any] = {spec.name: spec.default for spec in SPECS}
    origins: dict[str, str] = {spec.name: "default" for spec in SPECS}

    file_values, file_name = _file_settings(project_dir)
    registries: tuple[RegistryEntry, ...] = ()
    if "registries" in file_values:
        registries = registry_entries(file_values.pop("registries"), file_name)
        origins["registries"] = file_name
    for key, raw in file_values.items():
        if any(word in key.lower() for word in CREDENTIAL_WORDS):
            raise ConfigError(
                f"{file_name}: '{key}' looks like a credential, and credentials do not belong "
                "in a file that gets committed",
                "remove it and set DOCKERHUB_TOKEN / the AWS credential chain instead",
            )
        if key not in SPECS_BY_NAME:
            raise ConfigError(
                f"{file_name}: unknown setting '{key}'",
                f"known settings: {', '.join(SPECS_BY_NAME)}",
            )
        values[key] = _coerce(SPECS_BY_NAME[key], raw, file_name)
        origins[key] = file_name

    for spec in SPECS:
        for env_name in spec.env_names:
            raw = environ.get(env_name)
            if raw is not None and raw != "":
                values[spec.name] = _coerce(spec, raw, f"environment {env_name}")
                origins[spec.name] = f"environment {env_name}"
                break

    if not values["aws_region"]:
        region, origin = _aws_profile_region(environ)
        if region:
            values["aws_region"] = _coerce(SPECS_BY_NAME["aws_region"], region, origin)
            origins["aws_region"] = origin

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        spec = SPECS_BY_NAME[name]
        flag = setting_flag(name)
        values[name] = _coerce(spec, raw, f"flag {flag}")
        origins[name] = f"flag {flag}"

    for spec in SPECS:
        if spec.validate is not None:
            try:
                values[spec.name] = spec.validate(values[spec.name])
            except ConfigError as exc:
                raise exc.reworded(f"{origins[spec.name]}: {exc.message}") from exc
    explicit = frozenset(name for name, origin in origins.items() if origin != "default")
    return Settings(
        project_dir=project_dir,
        origins=origins,
        explicit=explicit,
        registries=registries,
        **values,
    )
