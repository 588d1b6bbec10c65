"""A cache of ECR push tokens, so that a developer's repeated ship needs no AWS call.

Like amazon-ecr-credential-helper's cache: one JSON file, `ecr-tokens.json` in shipit's cache
directory (`$XDG_CACHE_HOME/shipit/`, else `~/.cache/shipit/`), mode 0600 in a 0700 directory,
written to a temporary file and renamed into place. Each entry holds a token from ECR's
GetAuthorizationToken, the caller identity STS named when the token was fetched, and what a
push needs to know about each repository (its URI and tag mutability).

An entry is found by a key that is computed without boto3 (importing botocore and creating its
clients is most of a no-change ship's time): the region, the AWS endpoint settings, and a
fingerprint of the credentials that boto3 will use, taken from what identifies them cheaply:
the access key id (and a hash of the session token) from the environment, or the profile's
role ARN, SSO account and role, or access key id from the shared files, with those files'
identity and modification time, so that an edit starts over. Credentials that cannot be
fingerprinted this way (an instance or container role, web identity, credential_process) are
not cached: boto3 resolves them every time. No secret access key, and no hash of one, is kept.

A token is used for at most half of its life (ECR's are valid 12 h). The cache is off with
`--no-cache`, `ecr_cache = "off"`, and by default in CI (`CI` set); docs/SECURITY.md says
why. This module must not import boto3: a cache hit is the path that avoids it.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import datetime
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipit.ci_kind import in_ci
from shipit.config import aws_profile
from shipit.redact import register_secret
from shipit.registries.credentials import Credentials

CACHE_FILE = "ecr-tokens.json"
_FORMAT = 1
# How far a token's issue time may lie in the future before the local clock is not trusted.
_CLOCK_SKEW_SECONDS = 300.0
# Environment variables that change which AWS endpoint answers, hence which registry.
_ENDPOINT_VARIABLES = (
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_STS_REGIONAL_ENDPOINTS",
)
# Credential sources that boto3 prefers over a profile's and that cannot be fingerprinted
# without running them: web identity from the environment, a container's role.
_UNCACHEABLE_VARIABLES = (
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def cache_wanted(setting: str, environ: Mapping[str, str]) -> bool:
    if setting == "auto":
        return not in_ci(environ)
    return setting == "on"


def cache_directory(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative path is invalid and is ignored.
    if not base or not os.path.isabs(base):
        home = environ.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".cache")
    return Path(base) / "shipit"


def write_atomically(path: Path, data: bytes) -> None:
    """Writes a file of shipit's cache as a 0600 file. The rename replaces the old file in one
    step, so a reader sees the old or the new file, never half of one."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_identity(path: Path) -> str:
    """Changes whenever the file is edited or replaced."""
    try:
        info = path.stat()
    except OSError:
        return f"{path}:absent"
    return f"{path}:{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def _read_ini(path: Path) -> configparser.RawConfigParser | None:
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return parser
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    return parser


def _section(parser: configparser.RawConfigParser, names: tuple[str, ...]) -> dict[str, str]:
    for name in names:
        if parser.has_section(name):
            return {key: value.strip() for key, value in parser.items(name)}
    return {}


def _keys_part(options: Mapping[str, str]) -> list[str] | None:
    key_id = options.get("aws_access_key_id", "")
    if not key_id or not options.get("aws_secret_access_key"):
        return None
    part = ["keys", key_id]
    session = options.get("aws_session_token") or options.get("aws_security_token")
    if session:
        part.append("session " + _sha256(session))
    return part


def credential_fingerprint(environ: Mapping[str, str]) -> str | None:
    """What identifies the credentials boto3 will use, in boto3's order of precedence, or
    None when that cannot be known without boto3 (then the cache is not used).

    Holds no secret: an access key id is not one, and a session token (hundreds of random
    characters) enters only as its SHA-256. A secret access key never enters at all."""
    from_environment = _keys_part(
        {
            "aws_access_key_id": environ.get("AWS_ACCESS_KEY_ID", ""),
            "aws_secret_access_key": environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "aws_session_token": environ.get("AWS_SESSION_TOKEN", "")
            or environ.get("AWS_SECURITY_TOKEN", ""),
        }
    )
    if from_environment is not None:
        return "\n".join(["environment", *from_environment])
    if environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_SECRET_ACCESS_KEY"):
        return None  # half a key pair: boto3 says what is wrong
    if any(environ.get(name) for name in _UNCACHEABLE_VARIABLES):
        return None
    home = environ.get("HOME") or os.path.expanduser("~")
    config_path = Path(environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config"))
    credentials_path = Path(
        environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    )
    config = _read_ini(config_path)
    credentials = _read_ini(credentials_path)
    if config is None or credentials is None:
        return None
    profile = aws_profile(environ)
    # As botocore reads them: "[profile NAME]" in config ("[default]" too for the default).
    wanted = ("default", "profile default") if profile == "default" else (f"profile {profile}",)
    options = _section(config, wanted)
    head = ["profile", profile, _file_identity(config_path), _file_identity(credentials_path)]
    if options.get("role_arn"):
        if options.get("web_identity_token_file"):
            return None
        source = [options.get(name, "") for name in ("source_profile", "credential_source")]
        extra = [options.get(name, "") for name in ("role_session_name", "external_id")]
        return "\n".join([*head, "role", options["role_arn"], *source, *extra])
    if options.get("sso_account_id") or options.get("sso_session"):
        if not (options.get("sso_account_id") and options.get("sso_role_name")):
            return None
        start = options.get("sso_session") or options.get("sso_start_url", "")
        return "\n".join([*head, "sso", start, options["sso_account_id"], options["sso_role_name"]])
    keys = _keys_part(_section(credentials, (profile,))) or _keys_part(options)
    if keys is not None:
        return "\n".join([*head, *keys])
    return None  # credential_process, an instance role, or nothing: boto3's business


def cache_key(fingerprint: str, region: str, environ: Mapping[str, str]) -> str:
    """The entry's name in the file: a SHA-256 of the credentials' fingerprint, the region
    and the endpoint settings."""
    endpoints = sorted(
        f"{name}={value}"
        for name, value in environ.items()
        if (name.startswith("AWS_ENDPOINT_URL") or name in _ENDPOINT_VARIABLES) and value
    )
    return _sha256("\n".join([f"v{_FORMAT}", fingerprint, f"region {region}", *endpoints]))


@dataclass(frozen=True)
class CachedToken:
    username: str
    password: str = field(repr=False)
    endpoint: str  # host[:port], no scheme
    issued_at: float  # this machine's clock when the token was fetched
    expires_at: float  # what ECR said

    @property
    def reuse_until(self) -> float:
        """A token serves at most half its life: a ship that starts near the end of it still
        has hours to run, and a copy of the file loses its use early."""
        return self.issued_at + (self.expires_at - self.issued_at) / 2

    def usable(self, now: float) -> bool:
        return self.issued_at - _CLOCK_SKEW_SECONDS <= now < self.reuse_until

    @property
    def login(self) -> Credentials:
        return Credentials(self.username, password=self.password, source="the ECR token cache")


@dataclass(frozen=True)
class CachedRepository:
    """What ECR said of the repository when it was found or made: no DescribeRepositories
    call is needed again while the entry lasts."""

    uri: str
    tag_mutability: str


@dataclass(frozen=True)
class CacheHit:
    account: str
    arn: str
    token: CachedToken
    repository: CachedRepository


def _clock_text(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).strftime("%H:%M")


def hit_note(hit: CacheHit) -> str:
    return (
        f"ECR token from cache (expires {_clock_text(hit.token.expires_at)}, used until "
        f"{_clock_text(hit.token.reuse_until)}; --no-cache to fetch a new one)"
    )


def _token_of(data: Any) -> CachedToken:
    return CachedToken(
        username=str(data["username"]),
        password=str(data["password"]),
        endpoint=str(data["endpoint"]),
        issued_at=float(data["issued_at"]),
        expires_at=float(data["expires_at"]),
    )


class TokenCache:
    """The cache file. Every problem with it is a warning (in `warnings`, each said once)
    and a fetch through boto3, never a failed push."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        uid: int | None = None,
    ) -> None:
        self.directory = directory
        self.path = directory / CACHE_FILE
        self.clock = clock
        self.uid = os.getuid() if uid is None else uid
        self.warnings: list[str] = []
        # False once the file or its directory is not safe to use: nothing is read or written.
        self.usable = True

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _refuse(self, why: str, hint: str) -> None:
        self.usable = False
        self._warn(f"not using the ECR token cache {self.path}: {why}; {hint}")

    def _safe_directory(self, create: bool) -> bool:
        try:
            if create:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(self.directory)
        except FileNotFoundError:
            return False
        except OSError as error:
            self._refuse(f"cannot use its folder ({error.strerror})", "check the folder")
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != self.uid:
            self._refuse(
                "its folder is not a folder owned by you", f"remove {self.directory} or fix it"
            )
            return False
        if info.st_mode & 0o077:
            # shipit's own folder: nobody else has any business in it.
            os.chmod(self.directory, 0o700)
        return True

    def _entries(self) -> dict[str, Any]:
        """Every entry of the file; {} when there is none or the file cannot be trusted."""
        if not self.usable or not self._safe_directory(create=False):
            return {}
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as error:
            self._refuse(f"cannot open it ({error.strerror})", f"delete {self.path}")
            return {}
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != self.uid:
                self._refuse("it is not a file owned by you", f"delete {self.path}")
                return {}
            if info.st_mode & 0o077:
                self._refuse(
                    "other users can read or write it, so its tokens may have leaked",
                    f"delete {self.path} (shipit writes a new one, mode 0600)",
                )
                return {}
            raw = handle.read()
        try:
            document = json.loads(raw)
            if document.get("format") != _FORMAT or not isinstance(document["entries"], dict):
                raise ValueError("unknown format")
            return dict(document["entries"])
        except (ValueError, KeyError, TypeError, AttributeError):
            self._warn(f"ignored the ECR token cache {self.path}: it is not shipit's JSON")
            return {}

    def lookup(self, key: str, repository: str) -> CacheHit | None:
        """The entry for `key` when its token is still in the first half of its life and it
        knows `repository`; None otherwise."""
        entry = self._entries().get(key)
        if entry is None:
            return None
        try:
            token = _token_of(entry["token"])
            facts = entry["repositories"].get(repository)
            known = (
                None
                if facts is None
                else CachedRepository(str(facts["uri"]), str(facts["tag_mutability"]))
            )
            account, arn = str(entry["account"]), str(entry["arn"])
        except (KeyError, TypeError, ValueError, AttributeError):
            self._warn(f"ignored an entry of the ECR token cache {self.path}: it is incomplete")
            return None
        register_secret(token.password)
        register_secret(base64.b64encode(f"{token.username}:{token.password}".encode()).decode())
        if known is None or not token.usable(self.clock()):
            return None
        return CacheHit(account=account, arn=arn, token=token, repository=known)

    def _write(self, entries: dict[str, Any]) -> None:
        if not self.usable or not self._safe_directory(create=True):
            return
        now = self.clock()
        kept = {}
        for key, entry in entries.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                if _token_of(entry["token"]).usable(now):
                    kept[key] = entry
        text = json.dumps({"format": _FORMAT, "entries": kept}, indent=1, sort_keys=True)
        write_atomically(self.path, text.encode("utf-8"))

    def _safely(self, change: Callable[[dict[str, Any]], None]) -> None:
        try:
            entries = self._entries()
            change(entries)
            self._write(entries)
        except OSError as error:
            self._warn(f"could not write the ECR token cache {self.path}: {error.strerror}")

    def store(
        self,
        key: str,
        *,
        account: str,
        arn: str,
        token: CachedToken,
        repository: tuple[str, CachedRepository] | None,
    ) -> None:
        """A new token for `key`; the repositories the entry knew stay known."""

        def change(entries: dict[str, Any]) -> None:
            old = entries.get(key)
            known: dict[str, Any] = {}
            if isinstance(old, dict) and old.get("account") == account:
                known = dict(old.get("repositories") or {})
            if repository is not None:
                name, facts = repository
                known[name] = {"uri": facts.uri, "tag_mutability": facts.tag_mutability}
            entries[key] = {
                "account": account,
                "arn": arn,
                "token": {
                    "username": token.username,
                    "password": token.password,
                    "endpoint": token.endpoint,
                    "issued_at": token.issued_at,
                    "expires_at": token.expires_at,
                },
                "repositories": known,
            }

        self._safely(change)

    def add_repository(self, key: str, name: str, facts: CachedRepository) -> None:
        def change(entries: dict[str, Any]) -> None:
            entry = entries.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("repositories"), dict):
                entry["repositories"][name] = {
                    "uri": facts.uri,
                    "tag_mutability": facts.tag_mutability,
                }

        self._safely(change)

    def drop(self, key: str) -> None:
        def change(entries: dict[str, Any]) -> None:
            entries.pop(key, None)

        self._safely(change)


@dataclass
class EcrCacheSlot:
    """The cache and this push's key in it."""

    cache: TokenCache
    key: str


def cache_slot(
    setting: str, region: str, environ: Mapping[str, str], directory: Path | None = None
) -> EcrCacheSlot | None:
    """Where this push's ECR token is cached, or None when the cache is off or the
    credentials cannot be fingerprinted without boto3."""
    if not region or not cache_wanted(setting, environ):
        return None
    fingerprint = credential_fingerprint(environ)
    if fingerprint is None:
        return None
    return EcrCacheSlot(
        TokenCache(directory or cache_directory(environ)),
        cache_key(fingerprint, region, environ),
    )
