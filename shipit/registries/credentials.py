"""Where a registry's credentials come from: the one home of that rule.

In order:
1. Named environment variables: DOCKERHUB_USERNAME + DOCKERHUB_TOKEN for Docker Hub (the
   catalogue names them), the `username_env` + `password_env` of a [[registries]] table for
   the others. CI sets these.
2. What `docker login` stored, read-only, from $DOCKER_CONFIG/config.json (default
   ~/.docker/config.json): the registry's `credHelpers` entry, else `credsStore`, each asked
   through the docker-credential-<helper> `get` protocol; else its `auths` entry (`auth`,
   `username`/`password`, or an `identitytoken`). Nothing is ever written there.

An identity token (what Docker Hub's `docker login` saves: an OAuth refresh token, shown by a
helper as the user "<token>") is passed as `identitytoken`, never as a password. ECR is not
here: its credentials are a fresh token from boto3 (registries/ecr.py), or the token cache's.
`Credentials` is the one login type of every registry, ECR's included.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipit.errors import AuthError, ConfigError
from shipit.redact import register_secret

# The key Docker uses for Docker Hub in config.json and with credential helpers.
DOCKERHUB_SERVER = "https://index.docker.io/v1/"
DOCKERHUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
# A helper's answer for an identity token instead of a password (docker/cli, credentials).
_TOKEN_USERNAME = "<token>"  # noqa: S105 - a marker, not a token
_HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""

    def auth_config(self) -> dict[str, str]:
        """For the engine's push (docker-py `auth_config`)."""
        if self.identity_token:
            return {"username": self.username, "identitytoken": self.identity_token}
        return {"username": self.username, "password": self.password}

    @property
    def secret(self) -> str:
        return self.identity_token or self.password


def _registered(found: Credentials) -> Credentials:
    register_secret(found.secret)
    return found


def is_docker_hub(host: str) -> bool:
    return host.lower() in DOCKERHUB_HOSTS


def server_key(host: str) -> str:
    """The name `docker login` files a registry under."""
    return DOCKERHUB_SERVER if is_docker_hub(host) else host


def _normal_host(key: str) -> str:
    """'https://ghcr.io/v2/' -> 'ghcr.io', as Docker matches config.json keys to hosts."""
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    host = text.split("/", 1)[0].lower()
    return "docker.io" if is_docker_hub(host) else host


def docker_config_path(environ: Mapping[str, str]) -> Path:
    folder = environ.get("DOCKER_CONFIG") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".docker"
    )
    return Path(folder) / "config.json"


def _read_docker_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read Docker's credentials file {path}: {exc}",
            "fix or remove it, or give the registry's credentials in environment variables",
        ) from exc
    return data if isinstance(data, dict) else {}


def _ask_helper(helper: str, server: str, environ: Mapping[str, str]) -> Credentials | None:
    program = f"docker-credential-{helper}"
    path = shutil.which(program, path=environ.get("PATH"))
    if path is None:
        raise ConfigError(
            f"Docker's credentials file names the helper {helper!r}, but {program} is not on PATH",
            f"install {program}, or give the registry's credentials in environment variables",
        )
    try:
        completed = subprocess.run(
            [path, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
            env=dict(environ),
        )
    except subprocess.TimeoutExpired as exc:
        raise AuthError(
            f"{program} did not answer within {_HELPER_TIMEOUT:g} s", "unlock the credential store"
        ) from exc
    if completed.returncode != 0:
        # "credentials not found in native keychain": nothing stored for this registry.
        return None
    try:
        answer = json.loads(completed.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthError(
            f"{program} gave an answer that is not credentials",
            "check the helper with `docker login`",
        ) from exc
    if not secret:
        return None
    source = f"docker credential helper {helper}"
    if username == _TOKEN_USERNAME:
        return Credentials(username, identity_token=secret, source=source)
    return Credentials(username, password=secret, source=source)


def _from_auths(entry: Any, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
    token = str(entry.get("identitytoken") or "")
    if token:
        return Credentials(username or _TOKEN_USERNAME, identity_token=token, source=source)
    if username and password:
        return Credentials(username, password=password, source=source)
    return None


def stored_credentials(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """What `docker login` stored for host, or None. Read-only."""
    environ = os.environ if environ is None else environ
    path = docker_config_path(environ)
    config = _read_docker_config(path)
    wanted = _normal_host(host)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _normal_host(key) == wanted and isinstance(helper, str) and helper:
                return _registered_or_none(_ask_helper(helper, server_key(host), environ))
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _ask_helper(store, server_key(host), environ)
        if found is not None:
            return _registered(found)
    auths = config.get("auths")
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if _normal_host(key) == wanted:
                found = _from_auths(entry, f"{path} auths")
                if found is not None:
                    return _registered(found)
    return None


def _registered_or_none(found: Credentials | None) -> Credentials | None:
    return None if found is None else _registered(found)


def from_environment(
    username_variable: str, password_variable: str, environ: Mapping[str, str]
) -> Credentials | None:
    username = environ.get(username_variable, "").strip()
    password = environ.get(password_variable, "").strip()
    if not username and not password:
        return None
    if not username or not password:
        given, missing = (
            (password_variable, username_variable)
            if password
            else (username_variable, password_variable)
        )
        raise ConfigError(
            f"{given} is set but {missing} is not",
            f"set {missing} as well (the account and its token belong together)",
        )
    return _registered(
        Credentials(
            username,
            password=password,
            source=f"environment {username_variable}/{password_variable}",
        )
    )


def default_credentials(
    host: str,
    username_variable: str,
    password_variable: str,
    missing_hint: str,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """A registry with variable names of shipit's own (Docker Hub's, or those of the registry
    that stands in for it): those variables when they are set, else what `docker login`
    stored; neither is an AuthError with `missing_hint`."""
    environ = os.environ if environ is None else environ
    try:
        found = from_environment(username_variable, password_variable, environ)
    except ConfigError as exc:
        raise AuthError(exc.message, exc.hint) from exc
    found = found or stored_credentials(host, environ)
    if found is None:
        raise AuthError(f"no credentials for {host}", missing_hint)
    return found


def entry_credentials(
    name: str,
    host: str,
    username_env: str,
    password_env: str,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """A [[registries]] entry: its named variables when it has them, else `docker login`'s."""
    environ = os.environ if environ is None else environ
    if username_env:
        missing = [
            f"{setting} {variable}"
            for setting, variable in (
                ("username_env", username_env),
                ("password_env", password_env),
            )
            if not environ.get(variable, "").strip()
        ]
        if missing:
            raise ConfigError(
                f"registry {name!r}: {' and '.join(missing)} not set in the environment",
                "export the account and its token there (CI: from a secret)",
            )
        found = from_environment(username_env, password_env, environ)
        assert found is not None  # both variables are set
        return found
    stored = stored_credentials(host, environ)
    if stored is None:
        raise ConfigError(
            f"registry {name!r}: no credentials for {host}",
            f"set username_env and password_env in its [[registries]] table, "
            f"or `docker login {host}`",
        )
    return stored
