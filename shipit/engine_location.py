"""Where the Docker engine is, and who said so: DOCKER_HOST with its TLS settings, the current
docker context, or the local socket, resolved as the docker CLI resolves them. The adapter
(engine.py) connects there; engine_diagnosis.py says why it could not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipit import paramiko_deferred  # noqa: F401 - before docker, see that module

# isort: split
import docker
import docker.errors

from shipit.errors import EngineError
from shipit.loopback import is_loopback

_LOCAL_SCHEMES = ("unix", "npipe", "http+unix")


@dataclass(frozen=True)
class EngineAddress:
    """Where the engine is and who said so, resolved the way the docker CLI does it:
    DOCKER_HOST (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH), else the current docker
    context (DOCKER_CONTEXT, or `docker context use`), else the local socket."""

    url: str
    source: str
    tls: bool = False
    cert_path: str = ""

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None) -> EngineAddress:
        environ = os.environ if environ is None else environ
        host = environ.get("DOCKER_HOST", "")
        cert_path = environ.get("DOCKER_CERT_PATH", "")
        verify = environ.get("DOCKER_TLS_VERIFY", "") != ""
        if host:
            tls = bool(cert_path or verify)
            if tls and not cert_path:
                cert_path = os.path.join(os.path.expanduser("~"), ".docker")
            return cls(host, "DOCKER_HOST", tls, cert_path if tls else "")
        context = _current_context(environ)
        if context is not None:
            return context
        return cls("unix:///var/run/docker.sock", "the default socket")

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower() if "://" in self.url else "tcp"

    @property
    def host(self) -> str:
        """The engine's host name or address; empty for a local socket."""
        if self.scheme in _LOCAL_SCHEMES:
            return ""
        rest = self.url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        if rest.startswith("["):
            return rest[1 : rest.find("]")]
        return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest

    @property
    def is_local_socket(self) -> bool:
        return self.scheme in _LOCAL_SCHEMES

    @property
    def is_remote(self) -> bool:
        """Whether the engine's published ports live on another machine than this one."""
        return bool(self.host) and not is_loopback(self.host)

    def describe(self) -> str:
        """DOCKER_HOST=tcp://host:2376 (TLS), or the address and the context that names it."""
        shown = f"{self.url} (TLS)" if self.tls else self.url
        if self.source == "DOCKER_HOST":
            return f"DOCKER_HOST={shown}"
        return shown if self.source == "the default socket" else f"{shown} ({self.source})"


def _current_context(environ: Mapping[str, str]) -> EngineAddress | None:
    """The docker context in use, when it is not the built-in default."""
    from docker.context import ContextAPI
    from docker.context.config import get_current_context_name

    name = environ.get("DOCKER_CONTEXT", "")
    try:
        name = name or str(get_current_context_name() or "")
        if not name or name == "default":
            return None
        context = ContextAPI.get_context(name)
    except (docker.errors.DockerException, OSError, ValueError, KeyError) as exc:
        raise EngineError(
            f"cannot read the docker context {name!r}: {exc}",
            "check `docker context ls`, or set DOCKER_HOST",
        ) from exc
    if context is None:
        raise EngineError(
            f"the docker context {name!r} does not exist",
            "pick one from `docker context ls` (`docker context use NAME`) or unset DOCKER_CONTEXT",
        )
    tls = context.TLSConfig
    return EngineAddress(
        str(context.Host),
        f"docker context {name}",
        tls=tls is not None,
        cert_path=os.path.dirname(tls.ca_cert) if tls is not None and tls.ca_cert else "",
    )


class EngineClient(docker.APIClient):
    """docker-py's client, minus one trap: requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE
    (set on many CI runners) replace the session's CA, so a TLS engine's own CA from
    DOCKER_CERT_PATH would be ignored and its certificate rejected."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings: Any = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings
