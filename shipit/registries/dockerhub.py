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


def credentials(
    registry: str, environ: Mapping[str, str], stored: StoredCredentials
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
