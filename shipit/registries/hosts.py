"""Which host serves a registry's API, and which URLs share the registry's origin.

Pure functions, used by `RegistryClient` (distribution.py) to decide where a request goes and
which requests may carry the registry's credentials.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def api_host(host: str) -> str:
    """The host that serves the v2 API: Docker Hub's user-facing names are not it."""
    host = host.strip().rstrip("/")
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    return DOCKER_HUB_API_HOST if host.lower() in DOCKER_HUB_ALIASES else host


def repository_path(host: str, repository: str) -> str:
    """The repository as `host`'s API names it: Docker Hub's official images live under
    library/ ("nginx" is "library/nginx"), as the engine assumes."""
    repository = repository.strip("/")
    if api_host(host) == DOCKER_HUB_API_HOST and "/" not in repository:
        return f"library/{repository}"
    return repository


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, lower case, the port spelled out when it is the default."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs name the same scheme, host and port: the only test of whether a
    request may carry the registry's credentials. Another port or plain http is another
    origin, as browsers and Go's http.Client treat it."""
    return origin(url) == origin(other)
