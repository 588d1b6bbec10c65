"""Which host names and addresses are this machine's own loopback, the one rule for a
registry (credentials and the proxy never leave loopback), an engine (a tcp:// engine on
loopback publishes on this machine) and a site's address (a remote engine's 127.0.0.1 is not
ours).

RFC 6761 reserves `localhost` and every name under `.localhost` for loopback; 127.0.0.0/8
and ::1 are loopback addresses.
"""

from __future__ import annotations

import ipaddress


def is_loopback(name: str) -> bool:
    """`name` is a host name or address without a port; `[::1]` may keep its brackets."""
    name = name.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
