"""AWS ECR as a registry of the push: its login is a token, from the token cache when that
holds a usable one and knows the repository (no AWS call, and boto3 stays unimported), else
through AWS (registries/ecr.py, imported only then).

Resolution only reads: it asks STS who the caller is, looks up the repository and fetches a
token. A missing repository is created by `prepare`, at the first push, so a failed build or
smoke test changes nothing. This module must not import boto3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from shipit.checks import Check, Probe
from shipit.config import Settings
from shipit.errors import PushError, ShipitError
from shipit.registries.credentials import Credentials
from shipit.registries.ecr_cache import (
    CachedRepository,
    CachedToken,
    CacheHit,
    EcrCacheSlot,
    cache_slot,
    hit_note,
)
from shipit.registries.registry import AwsAccess, RegistrySpec, Request, Target, connect
from shipit.registries.transport import rules_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shipit.aws import CallerIdentity
    from shipit.registries.ecr import Ecr
    from shipit.registries.transport import RegistryRules

# STS answers the same caller in any region; without a configured one this lets doctor check
# the credentials on their own (the region gets its own failing check).
STS_FALLBACK_REGION = "us-east-1"
_AUTH_HINT = "check the AWS identity's ECR permissions (`shipit iam policy`)"
_LOOKED_UP_AGAIN = "the registry refused what the ECR token cache held; looked it up again"

RulesOf = Callable[[str], "RegistryRules | None"]


def judge_identity(identity: CallerIdentity) -> Check:
    """Any identity but the account's root user will do; the policy decides the rest."""
    from shipit.aws import root_refusal

    if identity.is_root:
        refusal = root_refusal(identity)
        return Check("aws_credentials", "fail", refusal.message, refusal.hint)
    return Check("aws_credentials", "ok", f"{identity.arn} (account {identity.account})")


@dataclass(frozen=True)
class EcrRegistry:
    spec: RegistrySpec
    settings: Settings

    names_iam_actions = True
    renewable = True
    auth_hint = _AUTH_HINT

    @property
    def name(self) -> str:
        return self.spec.name

    def _slot(self, environ: Mapping[str, str]) -> EcrCacheSlot | None:
        return cache_slot(self.settings.ecr_cache, self.settings.aws_region, environ)

    def _missing_repository(self) -> PushError:
        return PushError(
            f"ECR repository {self.settings.ecr_repository_name} does not exist in "
            f"{self.settings.aws_region}",
            "create it, or set ecr_create_repository = true",
        )

    def resolve(
        self, request: Request, engine_rules: Callable[[], RegistryRules] | None = None
    ) -> Target:
        def rules_of(host: str) -> RegistryRules | None:
            return None if engine_rules is None else rules_for(host, engine_rules)

        slot = self._slot(request.environ)
        if slot is not None:
            hit = slot.cache.lookup(slot.key, self.settings.ecr_repository_name)
            if hit is not None:
                return self._cached(slot, hit, request, rules_of)
        target = self._from_aws(slot, request, rules_of)
        if slot is None:
            return target
        warnings = tuple(f"warning: {text}" for text in slot.cache.warnings)
        return replace(target, notes=(*warnings, *target.notes))

    def _target(
        self,
        endpoint: str,
        request: Request,
        rules_of: RulesOf,
        login: Credentials,
        mutability: str,
        notes: tuple[str, ...],
        *,
        cached: bool = False,
        missing: bool = False,
        aws: AwsAccess | None = None,
    ) -> Target:
        """A Target at the token's endpoint, or at ecr_registry when that is set."""
        host = self.settings.ecr_registry or endpoint
        rules = rules_of(host)
        return Target(
            registry=self,
            host=host,
            repository=self.settings.ecr_repository_name,
            login=login,
            mutability=mutability,
            client=connect(self, host, login, rules),
            request=request,
            notes=notes,
            cached=cached,
            missing=missing,
            rules=rules,
            aws=aws,
        )

    def _cached(
        self, slot: EcrCacheSlot, hit: CacheHit, request: Request, rules_of: RulesOf
    ) -> Target:
        return self._target(
            hit.token.endpoint,
            request,
            rules_of,
            hit.token.login,
            hit.repository.tag_mutability,
            (*(f"warning: {text}" for text in slot.cache.warnings), hit_note(hit)),
            cached=True,
        )

    def _from_aws(self, slot: EcrCacheSlot | None, request: Request, rules_of: RulesOf) -> Target:
        from shipit.aws import AwsSession, root_refusal
        from shipit.registries.ecr import Ecr

        settings = self.settings
        aws = AwsSession(settings.aws_region)
        ecr = Ecr(aws)
        identity = aws.caller()
        if identity.is_root and not request.allow_root:
            raise root_refusal(identity)
        name = settings.ecr_repository_name
        notes = []
        repository = ecr.repository(name)
        mutability = settings.ecr_tag_mutability
        # Root keys are never cached: each of their ships asks STS and refuses them again.
        cache = None if slot is None or identity.is_root else slot
        if repository is None:
            if not settings.ecr_create_repository:
                raise self._missing_repository()
            if request.dry_run:
                notes.append(f"would create ECR repository {name} ({mutability}, scan on push)")
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
        return self._target(
            token.endpoint,
            request,
            rules_of,
            token.login,
            mutability,
            tuple(notes),
            missing=repository is None and not request.dry_run,
            aws=AwsAccess(ecr, cache),
        )

    @staticmethod
    def _aws(target: Target) -> AwsAccess:
        """The AWS clients that resolved `target` (a target from the cache has none: it is
        looked up again, not renewed, and its repository exists)."""
        assert target.aws is not None, "a target from the token cache is looked up again"
        return target.aws

    def prepare(self, target: Target) -> Target:
        if not target.missing:
            return target
        settings = self.settings
        name = settings.ecr_repository_name
        aws = self._aws(target)
        made = aws.ecr.create_repository(name, target.mutability, settings.ecr_scan_on_push)
        cache = aws.cache
        if cache is not None:
            cache.cache.add_repository(
                cache.key, name, CachedRepository(made.uri, made.tag_mutability)
            )
        return replace(
            target,
            mutability=made.tag_mutability,
            missing=False,
            notes=(*target.notes, f"created ECR repository {name}"),
        )

    def renewed(self, target: Target) -> Target:
        return target.with_login(self._aws(target).ecr.token().login)

    def looked_up_again(self, target: Target) -> Target:
        slot = self._slot(target.request.environ)
        if slot is not None:
            slot.cache.drop(slot.key)
        # The host is ECR's either way: the rules the engine gave for it still hold.
        fresh = self._from_aws(slot, target.request, lambda _host: target.rules)
        fresh = replace(fresh, notes=(*fresh.notes, _LOOKED_UP_AGAIN))
        return self.prepare(fresh)

    def immutable_tag_hint(self) -> str:
        # shipit reads ECR's own mutability setting, so only the repository can change.
        return "make the repository's tags mutable (`aws ecr put-image-tag-mutability`)"

    # doctor

    def doctor_checks(self, probe: Probe) -> list[Check]:
        probe.progress("doctor: asking AWS who the caller is")
        aws_check, identity, ecr = self._credentials_check()
        checks = [self._region_check(), aws_check, self._repository_check(identity, ecr)]
        if probe.online and probe.iam_verdict is not None:
            probe.progress("doctor: simulating the push's IAM actions")
            checks.append(probe.iam_verdict(identity))
        return checks

    def _region_check(self) -> Check:
        settings = self.settings
        if not settings.aws_region:
            return Check(
                "aws_region",
                "fail",
                "no AWS region is set",
                "set AWS_REGION, or aws_region in shipit.toml",
            )
        origin = settings.origins.get("aws_region", "")
        return Check("aws_region", "ok", f"{settings.aws_region} (from {origin})")

    def _credentials_check(self) -> tuple[Check, CallerIdentity | None, Ecr | None]:
        """The check, the caller, and the clients that asked (in the configured region)."""
        from shipit.aws import AwsSession
        from shipit.registries.ecr import Ecr

        try:
            aws = AwsSession(self.settings.aws_region or STS_FALLBACK_REGION)
            identity = aws.caller()
            ecr = Ecr(aws)
        except ShipitError as error:
            return Check.failed("aws_credentials", error), None, None
        return judge_identity(identity), identity, ecr if self.settings.aws_region else None

    def _repository_check(self, identity: CallerIdentity | None, ecr: Ecr | None) -> Check:
        name = "ecr_repository"
        settings = self.settings
        if identity is None:
            return Check.not_checked(name, "no working AWS credentials")
        if ecr is None:
            return Check.not_checked(name, "no AWS region")
        repository = settings.ecr_repository_name
        try:
            found = ecr.repository(repository)
        except ShipitError as error:
            return Check.failed(name, error)
        if found is not None:
            return Check(name, "ok", f"{found.uri} exists (tags {found.tag_mutability})")
        if settings.ecr_create_repository:
            scan = "on" if settings.ecr_scan_on_push else "off"
            return Check(
                name,
                "ok",
                f"{repository} does not exist in {settings.aws_region} yet; the first push "
                f"creates it (tags {settings.ecr_tag_mutability}, scan on push {scan})",
            )
        return Check.failed(name, self._missing_repository())
