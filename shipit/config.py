"""Settings: defaults, then shipit.toml (or [tool.shipit] in pyproject.toml), then SHIPIT_*
environment variables, then command-line flags, later ones winning. Each value remembers
where it came from so that `shipit config` can say so.

Credentials are deliberately not settings: a token in a file that gets committed is the
plaintext-credential mistake shipit exists to prevent.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shipit.errors import ConfigError

DEFAULT_BASE_IMAGE = "nginx:1.27.3-bookworm"
# Built by scripts/testenv.sh from Debian packages where the official image cannot be pulled.
LOCAL_BASE_IMAGE = "shipit-local/nginx:bookworm"
DEFAULT_DOCKERHUB_REGISTRY = "docker.io"
CONFIG_FILE = "shipit.toml"

# The Docker reference grammar (distribution/reference), without digests: shipit names tags.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?)"
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_REGION_RE = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d{1,2}$")
_HOST_RE = re.compile(rf"^{_DOMAIN}$")
_MUTABILITY = ("MUTABLE", "IMMUTABLE")
_KIND_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
_SECRET_WORDS = ("token", "password", "secret", "access_key")


def _is_valid_repository(value: str) -> bool:
    first, _, rest = value.partition("/")
    # As in Docker: the first component is a registry host only if it looks like one.
    if rest and ("." in first or ":" in first or first == "localhost"):
        return bool(_HOST_RE.match(first) and _PATH_RE.match(rest))
    return bool(_PATH_RE.match(value))


def validate_repository(value: str, what: str = "image name") -> str:
    if len(value) > 255 or not _is_valid_repository(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid image repository name",
            "use lowercase letters, digits and . _ - separators, e.g. 'shipit-site' or "
            "'registry.example.com/team/site'",
        )
    return value


def validate_tag(value: str) -> str:
    if not _TAG_RE.match(value):
        raise ConfigError(
            f"image tag {value!r} is not valid",
            "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        )
    return value


def split_reference(reference: str) -> tuple[str, str]:
    """'host:5000/name:tag' -> ('host:5000/name', 'tag'); no tag means 'latest'."""
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = reference.rsplit(":", 1)
        return validate_repository(repository, "image reference"), validate_tag(tag)
    return validate_repository(reference, "image reference"), "latest"


def validate_reference(value: str) -> str:
    split_reference(value)
    return value


def _validate_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"port {value} is out of range", "choose a port from 1 to 65535")
    return value


def _validate_region(value: str) -> str:
    if not _REGION_RE.match(value):
        raise ConfigError(
            f"AWS region {value!r} is not a region name", "use a region such as 'us-east-1'"
        )
    return value


def _validate_mutability(value: str) -> str:
    upper = value.upper()
    if upper not in _MUTABILITY:
        raise ConfigError(f"tag mutability {value!r} is not valid", "use MUTABLE or IMMUTABLE")
    return upper


def _validate_host(value: str) -> str:
    if not _HOST_RE.match(value):
        raise ConfigError(
            f"registry host {value!r} is not a host name", "use host[:port], e.g. '127.0.0.1:5000'"
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


def _validate_positive(value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{value} must be greater than zero", "use a positive number")
    return value


@dataclass(frozen=True)
class SettingSpec:
    name: str
    kind: type
    default: Any
    help: str
    env: tuple[str, ...] = ()
    validate: Callable[[Any], Any] | None = None

    @property
    def env_names(self) -> tuple[str, ...]:
        return (f"SHIPIT_{self.name.upper()}", *self.env)


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("image", str, "shipit-site", "local image name", validate=validate_repository),
    SettingSpec(
        "base_image", str, DEFAULT_BASE_IMAGE, "nginx base image", validate=validate_reference
    ),
    SettingSpec("host", str, "127.0.0.1", "address the container is published on"),
    SettingSpec(
        "port", int, 8080, "host port the container is published on", validate=_validate_port
    ),
    SettingSpec(
        "ready_timeout",
        float,
        30.0,
        "seconds to wait for the site to answer",
        validate=_validate_positive,
    ),
    SettingSpec(
        "ecr_repository",
        str,
        "",
        "ECR repository name (default: the image name)",
        validate=lambda v: validate_repository(v, "ECR repository") if v else v,
    ),
    SettingSpec(
        "ecr_registry",
        str,
        "",
        "registry host to push to instead of the token's endpoint",
        validate=lambda v: _validate_host(v) if v else v,
    ),
    SettingSpec(
        "ecr_tag_mutability",
        str,
        "MUTABLE",
        "tag mutability of a created ECR repository",
        validate=_validate_mutability,
    ),
    SettingSpec("ecr_create_repository", bool, True, "create the ECR repository when missing"),
    SettingSpec("ecr_scan_on_push", bool, True, "scan on push for a created ECR repository"),
    SettingSpec(
        "aws_region",
        str,
        "",
        "AWS region of the ECR repository",
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
        validate=lambda v: _validate_region(v) if v else v,
    ),
    SettingSpec(
        "dockerhub_repository",
        str,
        "",
        "Docker Hub repository, namespace/name",
        validate=lambda v: validate_repository(v, "Docker Hub repository") if v else v,
    ),
    SettingSpec(
        "dockerhub_registry",
        str,
        DEFAULT_DOCKERHUB_REGISTRY,
        "Docker Hub or any OCI registry",
        validate=_validate_host,
    ),
    SettingSpec(
        "dockerhub_tag_mutability",
        str,
        "MUTABLE",
        "whether tags in that registry may move",
        validate=_validate_mutability,
    ),
    SettingSpec(
        "engine_timeout",
        float,
        120.0,
        "seconds the Docker engine may stay silent (a push making no progress) before shipit "
        "gives up on that attempt",
        validate=_validate_positive,
    ),
    SettingSpec(
        "max_site_size",
        str,
        "10GB",
        "largest site (site/ and templates/) shipit builds; bytes or e.g. '500MB', '10GB'",
        validate=parse_size,
    ),
    SettingSpec(
        "push_attempts",
        int,
        4,
        "attempts per push when the registry fails transiently",
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
    max_site_size: int
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

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
        return {
            f.name: str(getattr(self, f.name)) if f.name == "project_dir" else getattr(self, f.name)
            for f in fields(self)
            if f.name != "origins"
        }


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
    for key, raw in file_values.items():
        if any(word in key.lower() for word in _SECRET_WORDS):
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

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        spec = SPECS_BY_NAME[name]
        flag = "--" + name.replace("_", "-")
        values[name] = _coerce(spec, raw, f"flag {flag}")
        origins[name] = f"flag {flag}"

    for spec in SPECS:
        if spec.validate is not None:
            try:
                values[spec.name] = spec.validate(values[spec.name])
            except ConfigError as exc:
                raise ConfigError(f"{origins[spec.name]}: {exc.message}", exc.hint) from exc
    return Settings(project_dir=project_dir, origins=origins, **values)
