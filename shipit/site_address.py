"""Where the engine publishes the site's port and where this machine reaches it: on a remote
engine 127.0.0.1 is that machine's loopback, so the port is published on all its addresses
and reached at the engine's host (or at reach_host, past a NAT or a tunnel). pipeline.run
and doctor ask here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipit.config import Settings
from shipit.errors import PortBusyError

if TYPE_CHECKING:
    from shipit.engine import Engine


def site_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def publish_host(settings: Settings, engine: Engine) -> str:
    """Where the engine publishes the port. On a remote engine 127.0.0.1 is that machine's
    loopback, which nobody else reaches: unless told otherwise, publish on all its addresses."""
    if "host" not in settings.explicit and engine.address.is_remote:
        return "0.0.0.0"  # noqa: S104 - a remote engine's port must be reachable from here
    return settings.host


def reach_host(settings: Settings, engine: Engine, published_on: str) -> str:
    """Where this machine reaches the published port: the engine's own host for a remote
    engine, unless a NAT or tunnel puts it elsewhere (reach_host)."""
    if settings.reach_host:
        return settings.reach_host
    if engine.address.is_remote:
        return engine.address.host
    from shipit.engine import ALL_ADDRESSES

    if published_on in ALL_ADDRESSES:
        return "::1" if ":" in published_on else "127.0.0.1"
    return published_on


def ensure_port_free(engine: Engine, host: str, port: int) -> None:
    """Asks the engine, which is where the port is published: a probe socket on this machine
    tests the wrong machine for a remote engine, and fails on the TIME_WAIT connections that
    a site just served leaves behind. Anything else holding the port fails `docker run`."""
    owner = engine.container_publishing(host, port)
    if owner is not None:
        raise PortBusyError(
            f"port {host}:{port} is already in use (by container {owner})",
            f"stop it (docker rm -f {owner}) or choose another port with --port",
        )
