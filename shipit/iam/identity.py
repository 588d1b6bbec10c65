"""What IAM itself says the AWS caller may do, and the caller's context that IAM needs for it.

The IAM side of `shipit doctor --online`, through the caller's `AwsSession` (aws.py, which also
says who the caller is). Every AWS failure becomes the same one-line error with a hint as in
ECR (explain_aws_error), saying what was asked; the doctor reports it as a warning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shipit.aws import AWS_FAILURES, AwsSession, explain_aws_error
from shipit.errors import AwsError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_iam.type_defs import ContextEntryTypeDef

    from shipit.iam.actions import RequiredAccess

_ASSUMED_ROLE = re.compile(r"arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([^/]+)/([^/]+)")
_IAM_USER = re.compile(r"arn:aws[a-z-]*:iam::([0-9]{12}):user/(?:.*/)?([^/]+)")
# Access key ids of long-term credentials (an IAM user's keys) start with AKIA; temporary
# ones (a role session, GetSessionToken) with ASIA.
_LONG_TERM_KEY_PREFIX = "AKIA"
_IAM_USER_OR_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:(?:user|role)/.+")
# A doctor check must not hang on an endpoint that fails: one retry, short timeouts.
_IAM_CONFIG = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5}

SIMULATE_ACTION = "iam:SimulatePrincipalPolicy"


def simulation_principal(caller_arn: str) -> str | None:
    """The IAM user or role ARN that SimulatePrincipalPolicy accepts for a caller, or None.

    STS names a role session `arn:aws:sts::ACC:assumed-role/NAME/SESSION`, but IAM keeps the
    policies on the role, so the role is what gets simulated. The session ARN carries no role
    path; `simulate` looks the real ARN up when it may.
    """
    assumed = _ASSUMED_ROLE.fullmatch(caller_arn)
    if assumed is not None:
        partition, account, name, _ = assumed.groups()
        return f"arn:{partition}:iam::{account}:role/{name}"
    if _IAM_USER_OR_ROLE.fullmatch(caller_arn):
        return caller_arn
    return None


@dataclass(frozen=True)
class CallerContext:
    """The request context keys shipit knows about its caller, for IAM's simulation.

    Without them IAM simulates a request that has no aws:username and no MFA, and a policy
    that names the user or demands MFA (as AWS's own examples do) looks broken or fine for
    the wrong reason.
    """

    # (key, IAM's ContextKeyType, value)
    keys: tuple[tuple[str, Literal["string", "boolean"], str], ...]
    # "present", "absent (long-term access key)" or "unknown": MFA is in no ARN or key id.
    mfa: str

    def entries(self) -> list[ContextEntryTypeDef]:
        return [
            {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": kind}
            for key, kind, value in self.keys
        ]

    def describe(self) -> str:
        known = ", ".join(f"{key}={value}" for key, _, value in self.keys)
        return f"{known}; MFA {self.mfa}" if known else f"MFA {self.mfa}"


def caller_context(
    caller_arn: str,
    *,
    role_arn: str | None = None,
    role_id: str | None = None,
    access_key: str | None = None,
    mfa_serial: str | None = None,
) -> CallerContext:
    """The caller's own context: aws:username for an IAM user; for a role session the role
    (aws:PrincipalArn) and, when IAM told the role id, aws:userid (ROLEID:SESSION).

    aws:MultiFactorAuthPresent is "true" when the profile assumed its role with an MFA
    device (mfa_serial); an IAM user's long-term access key never carries the key at all.
    """
    keys: list[tuple[str, Literal["string", "boolean"], str]] = []
    user = _IAM_USER.fullmatch(caller_arn)
    assumed = _ASSUMED_ROLE.fullmatch(caller_arn)
    if user is not None:
        keys += [
            ("aws:username", "string", user.group(2)),
            ("aws:PrincipalArn", "string", caller_arn),
            ("aws:PrincipalAccount", "string", user.group(1)),
        ]
    elif assumed is not None:
        partition, account, name, session = assumed.groups()
        principal = role_arn or f"arn:{partition}:iam::{account}:role/{name}"
        keys += [
            ("aws:PrincipalArn", "string", principal),
            ("aws:PrincipalAccount", "string", account),
        ]
        if role_id:
            keys.append(("aws:userid", "string", f"{role_id}:{session}"))
    if mfa_serial:
        keys.append(("aws:MultiFactorAuthPresent", "boolean", "true"))
        mfa = "present"
    elif access_key is not None and access_key.startswith(_LONG_TERM_KEY_PREFIX):
        mfa = "absent (long-term access key)"
    else:
        mfa = "unknown"
    return CallerContext(tuple(keys), mfa)


@dataclass(frozen=True)
class SimulatedDecision:
    action: str
    resource: str
    decision: str  # IAM's words: allowed, explicitDeny or implicitDeny
    # Condition keys a policy asked about that the simulation had no value for.
    missing_context: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    def describe(self) -> str:
        if not self.missing_context:
            return f"{self.action} ({self.decision})"
        return f"{self.action} ({self.decision}; depends on {', '.join(self.missing_context)})"


@dataclass(frozen=True)
class Simulation:
    principal: str
    decisions: tuple[SimulatedDecision, ...]
    context: CallerContext = CallerContext((), "unknown")

    @property
    def refused(self) -> tuple[SimulatedDecision, ...]:
        return tuple(decision for decision in self.decisions if not decision.allowed)


def _role(client: IAMClient, arn: str) -> tuple[str, str | None]:
    """The role's full ARN (with its path) and id, or `arn` and None when IAM will not say."""
    name = arn.rsplit("/", 1)[-1]
    try:
        role = client.get_role(RoleName=name)["Role"]
        return str(role["Arn"]), str(role["RoleId"])
    except AWS_FAILURES:
        # Reading the role needs iam:GetRole; without it the path-less ARN still works for
        # every role created without a path, which is most of them.
        return arn, None


def simulate(
    session: AwsSession, caller_arn: str, accesses: Sequence[RequiredAccess]
) -> Simulation:
    """IAM's own verdict (iam:SimulatePrincipalPolicy) on each access for the caller.

    Only the caller's identity policies, boundaries and SCPs count; no repository policy.
    """
    principal = simulation_principal(caller_arn)
    if principal is None:
        raise AwsError(
            f"{caller_arn} is not an IAM user or role session, which is all IAM can simulate"
        )
    # IAM is global, but its endpoint differs per partition, which the session's region selects.
    client: IAMClient = session.client("iam", _IAM_CONFIG)
    role_id = None
    if ":role/" in principal:
        principal, role_id = _role(client, principal)
    access_key, mfa_serial = session.signing_credentials()
    context = caller_context(
        caller_arn,
        role_arn=principal if role_id else None,
        role_id=role_id,
        access_key=access_key,
        mfa_serial=mfa_serial,
    )
    by_resource: dict[str, list[str]] = {}
    for access in accesses:
        by_resource.setdefault(access.resource, []).append(access.action)
    decisions: list[SimulatedDecision] = []
    doing = f"simulating the policies of {principal} ({SIMULATE_ACTION})"
    try:
        paginator = client.get_paginator("simulate_principal_policy")
        for resource, actions in by_resource.items():
            # Without ResourceArns IAM simulates on "*", where the token action is granted.
            pages = (
                paginator.paginate(
                    PolicySourceArn=principal,
                    ActionNames=actions,
                    ContextEntries=context.entries(),
                )
                if resource == "*"
                else paginator.paginate(
                    PolicySourceArn=principal,
                    ActionNames=actions,
                    ResourceArns=[resource],
                    ContextEntries=context.entries(),
                )
            )
            for page in pages:
                decisions.extend(
                    SimulatedDecision(
                        action=result["EvalActionName"],
                        resource=result.get("EvalResourceName", resource),
                        decision=result["EvalDecision"],
                        missing_context=tuple(result.get("MissingContextValues", [])),
                    )
                    for result in page["EvaluationResults"]
                )
    except AWS_FAILURES as error:
        raise explain_aws_error(error, doing) from error
    return Simulation(principal, tuple(decisions), context)
