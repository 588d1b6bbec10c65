"""Work done from inside another network namespace, by a thread of this process.

The containerd-store engine (scripts/engines.sh) runs in the network namespace shipit-ctrd:
what its builds pull from and push to must listen on that namespace's loopback. setns(2) moves
only the thread that calls it, so one thread of the bench joins the namespace and keeps it;
everything handed to it (starting a registry or moto, a registry client, a timed client
process) runs there, and the processes it starts live there with it. The rest of the bench
stays in this machine's namespace, where the classic engine and its registries are.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

CLONE_NEWNET = 0x40000000  # <sched.h>
NETNS_DIR = Path("/var/run/netns")  # where `ip netns add` puts a namespace

P = ParamSpec("P")
T = TypeVar("T")


class NamespaceUnavailable(RuntimeError):
    """The namespace is not there, or this process may not join it."""


def _join(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise NamespaceUnavailable(f"cannot join {path}: {os.strerror(error)}")
    finally:
        os.close(descriptor)


class NetworkNamespace:
    """One thread inside the network namespace `name`; call() runs a function on it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = NETNS_DIR / name
        if not self.path.exists():
            raise NamespaceUnavailable(
                f"no network namespace {name} ({self.path}): run scripts/engines.sh up containerd"
            )
        # One worker, kept for every call: the thread that joined is the one that works.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{name}")
        self.call(_join, self.path)

    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._thread.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
