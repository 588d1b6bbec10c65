"""The library side of `shipit iam policy` and `shipit iam check`.

Both work on the same scope (region, account, repository and the optional features of the
push), so the policy that `iam policy` prints is exactly what `iam check` asks for. The
account comes from --account or, when that is missing, from STS; boto3 is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipit.config import Settings
from shipit.errors import PolicyDeniedError, UsageError
from shipit.iam.actions import (
    AUTHORIZATION_ACTION,
    RequiredAccess,
    partition_for_region,
    policy_for,
    repository_arn,
    required_access,
    signing_access,
    validate_account_id,
    validate_repository_name,
)
from shipit.iam.conditions import RequestContext
from shipit.iam.evaluator import Decision, Verdict, evaluate_all
from shipit.iam.policy_document import load_policy
from shipit.progress import Progress, quiet

VERDICT_LABELS: dict[Verdict, str] = {
    "allowed": "allowed",
    "explicit_deny": "explicit deny",
    "implicit_deny": "implicit deny",
    "conditional": "conditional",
    "undecided": "undecided",
}


@dataclass(frozen=True)
class PushScope:
    """Where shipit pushes, and which optional actions its push performs there."""

    region: str
    account: str
    repository: str
    create_repository: bool
    describe_images: bool
    account_source: str
    # The KMS key a signed push signs with (signing_key = awskms://...), as IAM names it.
    signing_key_arn: str = ""

    @property
    def partition(self) -> str:
        return partition_for_region(self.region)

    @property
    def arn(self) -> str:
        return repository_arn(self.partition, self.region, self.account, self.repository)

    # DescribeRepositories is always in: every push looks the repository up first.
    def accesses(self) -> list[RequiredAccess]:
        pushing = required_access(
            self.region,
            self.account,
            self.repository,
            describe_repository=True,
            create_repository=self.create_repository,
            describe_images=self.describe_images,
        )
        return pushing + (signing_access(self.signing_key_arn) if self.signing_key_arn else [])

    def policy(self) -> dict[str, Any]:
        return policy_for(self.accesses())

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "account": self.account,
            "account_source": self.account_source,
            "repository": self.repository,
            "repository_arn": self.arn,
            "create_repository": self.create_repository,
            "describe_images": self.describe_images,
        }


def resolve_scope(
    settings: Settings,
    *,
    account: str | None = None,
    region: str | None = None,
    repository: str | None = None,
    describe_images: bool = False,
    progress: Progress = quiet,
) -> PushScope:
    """Flags first, then settings; the account from STS only when --account is missing."""
    if account is not None:
        validate_account_id(account)
    region = region or settings.aws_region
    if not region:
        raise UsageError(
            "no AWS region for the repository ARN",
            "pass --region, or set AWS_REGION (or aws_region in shipit.toml)",
        )
    partition_for_region(region)
    name = validate_repository_name(repository or settings.ecr_repository_name)
    source = "--account"
    if account is None:
        from shipit.aws import AwsSession

        identity = AwsSession(region).caller()
        account = validate_account_id(identity.account)
        source = f"STS ({identity.arn})"
        progress(f"account {account} from STS, caller {identity.arn}")
    return PushScope(
        region=region,
        account=account,
        repository=name,
        create_repository=settings.ecr_create_repository,
        describe_images=describe_images,
        account_source=source,
        signing_key_arn=_signing_key_arn(settings, region, account),
    )


def _signing_key_arn(settings: Settings, region: str, account: str) -> str:
    """The KMS key of a signed push, "" when it signs with a key file or not at all."""
    from shipit.signing.ecdsa import KMS_SCHEME

    if not settings.signing_key.startswith(KMS_SCHEME):
        return ""
    from shipit.aws import AwsSession
    from shipit.signing.kms import kms_key_arn

    return kms_key_arn(
        settings.signing_key,
        AwsSession,
        settings.aws_region or region,
        account,
        partition_for_region(region),
    )


@dataclass(frozen=True)
class CheckReport:
    policies: tuple[str, ...]
    decisions: tuple[Decision, ...]
    scope: PushScope | None
    # None: no --context, so Conditions and policy variables stay "conditional".
    context: RequestContext | None = None
    warnings: tuple[str, ...] = ()

    @property
    def refused(self) -> tuple[Decision, ...]:
        return tuple(decision for decision in self.decisions if not decision.allowed)

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "policies": list(self.policies),
            "scope": None if self.scope is None else self.scope.to_json(),
            "context": None if self.context is None else self.context.to_json(),
            "warnings": list(self.warnings),
            "checks": [decision.to_json() for decision in self.decisions],
        }

    def failure(self) -> PolicyDeniedError | None:
        if not self.refused:
            return None
        explicit = any(decision.decision == "explicit_deny" for decision in self.refused)
        hint = "grant the missing actions (`shipit iam policy` prints a policy with all of them)"
        if explicit:
            hint += " and remove the Deny statements named"
        return PolicyDeniedError(
            f"{len(self.refused)} of {len(self.decisions)} actions are not allowed: "
            + "; ".join(_refusal(decision) for decision in self.refused),
            hint,
        )


def _refusal(decision: Decision) -> str:
    where = f"{decision.statement} in {decision.source}"
    if decision.decision == "explicit_deny":
        return f"{decision.action} is denied by {where}"
    if decision.decision == "conditional":
        return f"{decision.action} only conditionally, by {where}"
    if decision.decision == "undecided":
        return f"{decision.action} is undecided, by {where} (see the warning)"
    return f"{decision.action} is allowed by no statement"


def _requests(
    actions: Sequence[str], resources: Sequence[str], scope: Callable[[], PushScope]
) -> list[RequiredAccess]:
    """Pairs --action with --resource: by position when the counts are equal, one resource
    for every action, or, without --resource, the resource shipit performs the action on."""
    if not actions:
        if resources:
            raise UsageError(
                "--resource needs --action",
                "pass --action A --resource R, or neither to check shipit's own push",
            )
        return scope().accesses()
    if len(resources) == len(actions):
        return [RequiredAccess(a, r) for a, r in zip(actions, resources, strict=True)]
    if len(resources) == 1:
        return [RequiredAccess(action, resources[0]) for action in actions]
    if resources:
        raise UsageError(
            f"{len(actions)} --action but {len(resources)} --resource options",
            "pass one --resource for all actions, or one per --action in the same order",
        )
    on_repository = [a for a in actions if a.lower() != AUTHORIZATION_ACTION.lower()]
    arn = scope().arn if on_repository else ""
    return [
        RequiredAccess(action, "*" if action.lower() == AUTHORIZATION_ACTION.lower() else arn)
        for action in actions
    ]


def check_policies(
    settings: Settings,
    policy_files: Sequence[Path],
    actions: Sequence[str] = (),
    resources: Sequence[str] = (),
    *,
    account: str | None = None,
    region: str | None = None,
    repository: str | None = None,
    describe_images: bool = False,
    context: Sequence[str] = (),
    progress: Progress = quiet,
) -> CheckReport:
    """Evaluate the policy files, as if attached together to one identity, on each request.

    Without --action the requests are shipit's own push to the configured repository.
    `context` holds the --context KEY=VALUE options: with any, they are the whole request
    context and every Condition is judged; a key they do not name is absent from the request.
    """
    if not policy_files:
        raise UsageError("no policy to check", "pass --policy FILE (repeat it for several)")
    if account is not None:
        validate_account_id(account)
    request_context = RequestContext.from_options(context) if context else None
    policies = [load_policy(path) for path in policy_files]
    warnings = tuple(warning for policy in policies for warning in policy.warnings)
    for warning in warnings:
        progress(f"warning: {warning}")
    scopes: list[PushScope] = []

    def scope() -> PushScope:
        scopes.append(
            resolve_scope(
                settings,
                account=account,
                region=region,
                repository=repository,
                describe_images=describe_images,
                progress=progress,
            )
        )
        return scopes[-1]

    requests = _requests(actions, resources, scope)
    decisions = evaluate_all(policies, requests, request_context)
    return CheckReport(
        policies=tuple(policy.source for policy in policies),
        decisions=tuple(decisions),
        scope=scopes[-1] if scopes else None,
        context=request_context,
        warnings=warnings,
    )
