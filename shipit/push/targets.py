"""The push's targets: each selected registry resolved in the background (its login, its
repository's facts: see registries/registry.py), ready when the push asks for it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from shipit.config import Settings
from shipit.registries.catalog import RegistrySpec, registry_of
from shipit.registries.registry import Request, Target
from shipit.registries.transport import RegistryRules

__all__ = ["RegistryAccess", "Target"]


class RegistryAccess:
    """The push's targets, resolved in the background, one thread per registry.

    `shipit ship` starts this before it builds, so that importing boto3, asking STS who the
    caller is, looking up the ECR repository and fetching its token overlap the build and
    the smoke test instead of following them; `shipit push` resolves its registries the
    same way, side by side. A failure is kept and raised when the push asks for the target.
    """

    def __init__(
        self,
        settings: Settings,
        registries: tuple[RegistrySpec, ...],
        *,
        dry_run: bool = False,
        allow_root: bool = False,
        environ: Mapping[str, str] | None = None,
        registry_rules: Callable[[], RegistryRules] | None = None,
    ) -> None:
        self.names = tuple(spec.name for spec in registries)
        self.dry_run = dry_run
        request = Request(
            os.environ if environ is None else environ, dry_run=dry_run, allow_root=allow_root
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(registries)), thread_name_prefix="resolve"
        )
        # The engine's rules are asked here, in the background, so a `docker info` overlaps
        # the build.
        self._futures: dict[str, Future[Target]] = {
            spec.name: self._pool.submit(
                registry_of(spec, settings).resolve, request, registry_rules
            )
            for spec in registries
        }

    def target(self, name: str) -> Target:
        return self._futures[name].result()

    def resolved(self) -> tuple[Target, ...]:
        """The targets resolved so far, without waiting for the others."""
        return tuple(
            future.result()
            for future in self._futures.values()
            if future.done() and not future.cancelled() and future.exception() is None
        )

    def __enter__(self) -> RegistryAccess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops waiting for resolutions nobody needs any more (a failed build or smoke), and
        closes the registry clients of the targets that were resolved."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for target in self.resolved():
            target.close()
