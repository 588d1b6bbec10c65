"""Who the AWS caller is, and what IAM itself says that caller may do.

The boto3 side of `shipit iam` and `shipit doctor --online`. Every AWS failure becomes the
same one-line error with a hint as in ECR (explain_aws_error), saying what was asked; the
caller decides whether that is fatal (`shipit iam policy` without --account) or only a
warning (the doctor's simulation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from shipit.errors import AwsError
from shipit.registries.ecr import AWS_FAILURES, CallerIdentity, Ecr, explain_aws_error

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

    from shipit.iam.actions import RequiredAccess

_ASSUMED_ROLE = re.compile(r"arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([^/]+)/[^/]+")
_IAM_USER_OR_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:(?:user|role)/.+")
# A doctor check must not hang on an endpoint that fails: one retry, short timeouts.
_IAM_CONFIG = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5}

SIMULATE_ACTION = "iam:SimulatePrincipalPolicy"


def caller_identity(region: str) -> CallerIdentity:
    """The identity behind the default credential chain, from STS in `region`."""
    return Ecr(region).caller()


def simulation_principal(caller_arn: str) -> str | None:
    """The IAM user or role ARN that SimulatePrincipalPolicy accepts for a caller, or None.

    STS names a role session `arn:aws:sts::ACC:assumed-role/NAME/SESSION`, but IAM keeps the
    policies on the role, so the role is what gets simulated. The session ARN carries no role
    path; `simulate` looks the real ARN up when it may.
    """
    assumed = _ASSUMED_ROLE.fullmatch(caller_arn)
    if assumed is not None:
        partition, account, name = assumed.groups()
        return f"arn:{partition}:iam::{account}:role/{name}"
    if _IAM_USER_OR_ROLE.fullmatch(caller_arn):
        return caller_arn
    return None


@dataclass(frozen=True)
class SimulatedDecision:
    action: str
    resource: str
    decision: str  # IAM's words: allowed, explicitDeny or implicitDeny

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"


@dataclass(frozen=True)
class Simulation:
    principal: str
    decisions: tuple[SimulatedDecision, ...]

    @property
    def refused(self) -> tuple[SimulatedDecision, ...]:
        return tuple(decision for decision in self.decisions if not decision.allowed)


def _iam_client(region: str) -> IAMClient:
    # IAM is global, but its endpoint differs per partition, which the region selects.
    config = Config(region_name=region, **_IAM_CONFIG)  # type: ignore[arg-type]
    return boto3.session.Session().client("iam", config=config)


def _role_arn(client: IAMClient, arn: str) -> str:
    """The role's full ARN (with its path), or `arn` when IAM will not say."""
    name = arn.rsplit("/", 1)[-1]
    try:
        return str(client.get_role(RoleName=name)["Role"]["Arn"])
    except AWS_FAILURES:
        # Reading the role needs iam:GetRole; without it the path-less ARN still works for
        # every role created without a path, which is most of them.
        return arn


def simulate(region: str, caller_arn: str, accesses: Sequence[RequiredAccess]) -> Simulation:
    """IAM's own verdict (iam:SimulatePrincipalPolicy) on each access for the caller.

    Only the caller's identity policies, boundaries and SCPs count; no repository policy.
    """
    principal = simulation_principal(caller_arn)
    if principal is None:
        raise AwsError(
            f"{caller_arn} is not an IAM user or role session, which is all IAM can simulate"
        )
    client = _iam_client(region)
    if ":role/" in principal:
        principal = _role_arn(client, principal)
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
                paginator.paginate(PolicySourceArn=principal, ActionNames=actions)
                if resource == "*"
                else paginator.paginate(
                    PolicySourceArn=principal, ActionNames=actions, ResourceArns=[resource]
                )
            )
            for page in pages:
                decisions.extend(
                    SimulatedDecision(
                        action=result["EvalActionName"],
                        resource=result.get("EvalResourceName", resource),
                        decision=result["EvalDecision"],
                    )
                    for result in page["EvaluationResults"]
                )
    except AWS_FAILURES as error:
        raise explain_aws_error(error, doing) from error
    return Simulation(principal, tuple(decisions))
