"""Docker Hub (or any OCI registry standing in for it): where the credentials come from.

An access token in DOCKERHUB_USERNAME + DOCKERHUB_TOKEN comes first, as CI jobs set it;
otherwise the credential helper or store that `docker login` configured for that registry.
shipit reads them into memory for one push and never writes them anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shipit.errors import AuthError
from shipit.redact import register_secret

DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")

USERNAME_VARIABLE = "DOCKERHUB_USERNAME"
TOKEN_VARIABLE = "DOCKERHUB_TOKEN"  # noqa: S105 - the variable's name, not a token

StoredCredentials = Callable[[str], tuple[str, str] | None]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def docker_config_credentials(registry: str) -> tuple[str, str] | None:
    """(user, secret) from the Docker config's credential helper, store or auths entry, read
    only: shipit never writes there."""
    import docker.auth
    import docker.errors

    try:
        config = docker.auth.load_config()
        found = docker.auth.resolve_authconfig(
            config, None if registry in DOCKER_HUB_NAMES else registry
        )
    except (docker.errors.DockerException, OSError, ValueError):
        return None
    if not found:
        return None
    username = found.get("Username") or found.get("username")
    secret = found.get("Password") or found.get("password") or found.get("IdentityToken")
    return (str(username), str(secret)) if username and secret else None


def credentials(
    registry: str,
    environ: Mapping[str, str],
    stored: StoredCredentials = docker_config_credentials,
) -> Credentials:
    username = environ.get(USERNAME_VARIABLE, "").strip()
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if username and token:
        register_secret(token)
        return Credentials(username, token, f"environment {USERNAME_VARIABLE}/{TOKEN_VARIABLE}")
    if token and not username:
        raise AuthError(
            f"{TOKEN_VARIABLE} is set but {USERNAME_VARIABLE} is not",
            f"set {USERNAME_VARIABLE} to the account the access token belongs to",
        )
    found = stored(registry)
    if found is not None:
        register_secret(found[1])
        return Credentials(found[0], found[1], "docker credential store")
    raise AuthError(
        f"no credentials for {registry}",
        f"set {USERNAME_VARIABLE} and {TOKEN_VARIABLE} (a Docker Hub access token, not the "
        "account password), or log in once with a credential helper",
    )
