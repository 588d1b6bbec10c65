"""The push's targets: where each selected registry is and how to log in to it.

Resolution only reads: it asks STS who the caller is, looks up the ECR repository, fetches
its token, and finds the Docker Hub credentials. A missing ECR repository is created by the
push itself (Target.ensure_repository), so a failed build or smoke test changes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from shipit.config import Settings
from shipit.errors import ConfigError, PushError
from shipit.registries.catalog import RegistrySpec, credentials_of
from shipit.registries.distribution import RegistryClient
from shipit.registries.ecr_cache import (
    CachedRepository,
    CachedToken,
    CacheHit,
    EcrCacheSlot,
    cache_slot,
    hit_note,
)
from shipit.registries.transport import RegistryRules, rules_for


@dataclass
class Target:
    name: str
    registry: str
    repository: str
    auth: dict[str, str] = field(repr=False)
    mutability: str
    auth_hint: str
    notes: list[str] = field(default_factory=list)
    refresh_auth: Callable[[], dict[str, str]] | None = field(default=None, repr=False)
    # Creating a missing ECR repository waits for the first push: the target may be resolved
    # while the image is still being smoke-tested, and a failed test must change nothing.
    create_repository: Callable[[], str] | None = field(default=None, repr=False)
    # Set when the target came from the ECR token cache: resolves it again through AWS, for a
    # refusal that a stale cache entry would explain (a token or repository gone, a changed
    # tag mutability).
    resolve_fresh: Callable[[], Target] | None = field(default=None, repr=False)
    # The engine's rules for registry hosts (insecure registries), for shipit's own client.
    registry_rules: RegistryRules | None = field(default=None, repr=False)

    _client: RegistryClient | None = field(default=None, init=False, repr=False)

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def client(self) -> RegistryClient:
        """The one API client of this registry for the whole push: a new client would
        answer the auth challenge (and fetch a Bearer token) all over again."""
        if self._client is None:
            self._client = RegistryClient(
                self.registry,
                self.auth.get("username"),
                self.auth.get("password"),
                identity_token=self.auth.get("identitytoken"),
                auth_hint=self.auth_hint,
                rules=self.registry_rules,
            )
        return self._client

    def ensure_repository(self) -> None:
        if self.create_repository is not None:
            self.mutability = self.create_repository()
            self.create_repository = None
            self.notes.append(f"created ECR repository {self.repository}")

    def renew_auth(self) -> None:
        assert self.refresh_auth is not None
        self.auth = self.refresh_auth()
        if self._client is not None:
            self._client.use_credentials(self.auth.get("username"), self.auth.get("password"))

    def forget_cached(self) -> None:
        """Drops what the token cache said and takes a fresh resolution in its place; the
        notes list stays the same object (the push report shows it)."""
        assert self.resolve_fresh is not None
        fresh = self.resolve_fresh()
        self.resolve_fresh = None
        self.registry = fresh.registry
        self.auth = fresh.auth
        self.mutability = fresh.mutability
        self.refresh_auth = fresh.refresh_auth
        self.create_repository = fresh.create_repository
        self.notes[:] = [
            *fresh.notes,
            "the registry refused what the ECR token cache held; looked it up again",
        ]
        if self._client is not None:
            self._client.close()
            self._client = None
        self.ensure_repository()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


_ECR_AUTH_HINT = "check the AWS identity's ECR permissions (`shipit iam policy`)"


def _ecr_target(
    settings: Settings, environ: Mapping[str, str], *, dry_run: bool, allow_root: bool
) -> Target:
    """From the token cache when it holds a usable token and knows the repository (no AWS
    call, and boto3 stays unimported), else through AWS."""
    slot = cache_slot(settings.ecr_cache, settings.aws_region, environ)
    if slot is not None:
        hit = slot.cache.lookup(slot.key, settings.ecr_repository_name)
        if hit is not None:
            return _cached_ecr_target(settings, slot, hit, dry_run=dry_run, allow_root=allow_root)
    target = _ecr_target_from_aws(settings, slot, dry_run=dry_run, allow_root=allow_root)
    if slot is not None:
        target.notes[:0] = [f"warning: {text}" for text in slot.cache.warnings]
    return target


def _cached_ecr_target(
    settings: Settings, slot: EcrCacheSlot, hit: CacheHit, *, dry_run: bool, allow_root: bool
) -> Target:
    def resolve_fresh() -> Target:
        slot.cache.drop(slot.key)
        return _ecr_target_from_aws(settings, slot, dry_run=dry_run, allow_root=allow_root)

    return Target(
        name="ecr",
        registry=settings.ecr_registry or hit.token.endpoint,
        repository=settings.ecr_repository_name,
        auth=hit.token.auth_config(),
        mutability=hit.repository.tag_mutability,
        auth_hint=_ECR_AUTH_HINT,
        notes=[*(f"warning: {text}" for text in slot.cache.warnings), hit_note(hit)],
        resolve_fresh=resolve_fresh,
    )


def _ecr_target_from_aws(
    settings: Settings, slot: EcrCacheSlot | None, *, dry_run: bool, allow_root: bool
) -> Target:
    from shipit.aws import AwsSession, root_refusal
    from shipit.registries.ecr import Ecr, RegistryToken

    aws = AwsSession(settings.aws_region)
    ecr = Ecr(aws)
    identity = aws.caller()
    if identity.is_root and not allow_root:
        raise root_refusal(identity)
    name = settings.ecr_repository_name
    notes = []
    repository = ecr.repository(name)
    mutability = settings.ecr_tag_mutability
    create: Callable[[], str] | None = None
    # Root keys are never cached: each of their ships asks STS and refuses them again.
    cache = None if slot is None or identity.is_root else slot
    if repository is None:
        if not settings.ecr_create_repository:
            raise PushError(
                f"ECR repository {name} does not exist in {settings.aws_region}",
                "create it, or set ecr_create_repository = true",
            )
        if dry_run:
            notes.append(f"would create ECR repository {name} ({mutability}, scan on push)")
        else:

            def create() -> str:
                made = ecr.create_repository(name, mutability, settings.ecr_scan_on_push)
                if cache is not None:
                    facts = CachedRepository(made.uri, made.tag_mutability)
                    cache.cache.add_repository(cache.key, name, facts)
                return made.tag_mutability

    else:
        mutability = repository.tag_mutability
    issued = time.time()
    token = ecr.token()
    if cache is not None and token.expires_at is not None:
        cache.cache.store(
            cache.key,
            account=identity.account,
            arn=identity.arn,
            token=CachedToken(
                token.username, token.password, token.endpoint, issued, token.expires_at
            ),
            repository=None
            if repository is None
            else (name, CachedRepository(repository.uri, repository.tag_mutability)),
        )

    def refresh() -> dict[str, str]:
        fresh: RegistryToken = ecr.token()
        return fresh.auth_config()

    return Target(
        name="ecr",
        registry=settings.ecr_registry or token.endpoint,
        repository=name,
        auth=token.auth_config(),
        mutability=mutability,
        auth_hint=_ECR_AUTH_HINT,
        notes=notes,
        refresh_auth=refresh,
        create_repository=create,
    )


def _oci_target(spec: RegistrySpec, environ: Mapping[str, str]) -> Target:
    if not spec.repository:
        if spec.name == "dockerhub":
            raise ConfigError(
                "no Docker Hub repository is set",
                "set SHIPIT_DOCKERHUB_REPOSITORY (namespace/name) or push with --to ecr",
            )
        raise ConfigError(f"registry {spec.name!r} names no repository")
    found = credentials_of(spec, environ)
    if spec.name == "dockerhub":
        hint = "check DOCKERHUB_USERNAME and DOCKERHUB_TOKEN (an access token with write scope)"
    elif spec.username_env:
        hint = f"check {spec.username_env} and {spec.password_env} (a token with push scope)"
    else:
        hint = f"log in again with `docker login {spec.host}`"
    return Target(
        name=spec.name,
        registry=spec.host,
        repository=spec.repository,
        auth=found.auth_config(),
        mutability=spec.tag_mutability,
        auth_hint=hint,
        notes=[f"credentials from {found.source}"],
    )


def resolve_target(
    spec: RegistrySpec,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    dry_run: bool,
    allow_root: bool,
) -> Target:
    if spec.kind == "ecr":
        return _ecr_target(settings, environ, dry_run=dry_run, allow_root=allow_root)
    return _oci_target(spec, environ)


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
        environ = os.environ if environ is None else environ

        def resolve(spec: RegistrySpec) -> Target:
            target = resolve_target(spec, settings, environ, dry_run=dry_run, allow_root=allow_root)
            # Asked here, in the background, so a `docker info` overlaps the build.
            if registry_rules is not None:
                target.registry_rules = rules_for(target.registry, registry_rules)
            return target

        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(registries)), thread_name_prefix="resolve"
        )
        self._futures: dict[str, Future[Target]] = {
            spec.name: self._pool.submit(resolve, spec) for spec in registries
        }

    def target(self, name: str) -> Target:
        return self._futures[name].result()

    def __enter__(self) -> RegistryAccess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops waiting for resolutions nobody needs any more (a failed build or smoke), and
        closes the registry clients of the targets that were resolved."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for future in self._futures.values():
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().close()
