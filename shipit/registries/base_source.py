"""Where a base image is read from when shipit writes an image for several platforms: the
base's own registry, with what `docker login` stored for it (read only, never written), else
anonymously, as `docker pull` reads it.

A base reference is written as docker takes it: `nginx:1.27` is Docker Hub's
`library/nginx`, `127.0.0.1:5000/base/nginx:bookworm` a registry of its own (reference.py).
Every failure says which base image it was reading, in one line, with what to do:
a refusal is an AuthError, no answer a RegistryUnreachableError, a name the registry does
not know a ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shipit.closing import Closing
from shipit.errors import AuthError, ConfigError, RegistryUnreachableError, ShipitError
from shipit.reference import parse_reference
from shipit.registries.credentials import stored_credentials
from shipit.registries.distribution import RegistryClient
from shipit.registries.errors import RegistryResponseError
from shipit.registries.hosts import repository_path
from shipit.registries.manifest import Manifest
from shipit.registries.transport import RegistryRules

DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class BaseSource(Closing):
    """A base image's registry (`client`, for reads), repository and version.

    `repository` is as the registry's API names it (Docker Hub's official images under
    library/); `version` is the digest when the reference pins one, else its tag."""

    reference: str
    host: str
    repository: str
    version: str
    client: RegistryClient

    @property
    def anonymous(self) -> bool:
        return self.client.username is None

    def close(self) -> None:
        self.client.close()

    def manifest(self, version: str | None = None) -> Manifest:
        """The manifest (an index, or one platform's image) the reference names, or the one
        `version` (a digest from its index) names."""
        with self.reading():
            return self.client.get_manifest(self.repository, version or self.version)

    def config(self, manifest: Manifest) -> dict[str, Any]:
        """The image config that one platform's manifest names, checked against its digest."""
        with self.reading():
            return self.client.image_config(self.repository, manifest)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """The client's errors inside, said as errors reading this base image."""
        try:
            yield
        except ShipitError as error:
            raise self.explained(error) from error

    def explained(self, error: ShipitError) -> ShipitError:
        """`error` as a failure to read this base image, with what to do about it."""
        login = f"`docker login {self.host}`"
        said = f"base image {self.reference}: {error.message}"
        if isinstance(error, AuthError):
            hint = (
                f"{login} (shipit reads what it stores, read only), or check the base image's name"
                if self.anonymous
                else f"check that the account {login} stored may pull {self.repository}"
            )
            return _with_hint(error.reworded(said), hint)
        if isinstance(error, RegistryUnreachableError):
            elsewhere = "use a base image on a registry this machine reaches"
            hint = f"{error.hint}, or {elsewhere}" if error.hint else elsewhere
            return _with_hint(error.reworded(said), hint)
        if isinstance(error, RegistryResponseError) and error.status == 404:
            return ConfigError(
                f"base image {self.reference} is not in registry {self.client.display_host}",
                "check its name and tag (`docker pull` it to see)",
            )
        return error.reworded(said)


def _with_hint(error: ShipitError, hint: str) -> ShipitError:
    error.hint = hint
    return error


def base_source(
    reference: str,
    *,
    environ: Mapping[str, str] | None = None,
    rules: RegistryRules | None = None,
    timeout: float = 30.0,
) -> BaseSource:
    """The registry client, repository and version a base reference names, with the user's
    stored docker credentials for its registry when there are any. Contacts no registry.
    `rules`: the engine's (transport.rules_for), for a base on one of its insecure registries."""
    environ = os.environ if environ is None else environ
    parsed = parse_reference(reference, "base image")
    host = parsed.domain or DOCKER_HUB
    try:
        login = stored_credentials(host, environ)
    except ShipitError as error:
        raise error.reworded(f"base image {reference}: {error.message}") from error
    client = RegistryClient(
        host,
        login,
        timeout=timeout,
        rules=rules,
        auth_hint=f"`docker login {host}`, or check the base image's name",
    )
    return BaseSource(
        reference=reference,
        host=host,
        repository=repository_path(client.host, parsed.path),
        version=parsed.pull_version,
        client=client,
    )
