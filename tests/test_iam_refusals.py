"""A refused push or AWS call names the IAM action AWS named, and points at `shipit iam policy`.

The messages are the ones AWS and the Docker engine really produce for ECR."""

from __future__ import annotations

import botocore.exceptions
import pytest

from shipit.aws import explain_aws_error
from shipit.errors import AuthError
from shipit.iam.identity import SimulatedDecision, caller_context, simulation_principal
from shipit.iam.refusal import refused_action
from shipit.push_stream import classify_stream_error

REFERENCE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/site:abc123"
ECR_HINT = "check the AWS identity's ECR permissions (`shipit iam policy`)"
ROLE_SESSION = "arn:aws:sts::123456789012:assumed-role/ci-deploy/gh-actions-4711"
REPOSITORY = "arn:aws:ecr:eu-west-1:123456789012:repository/site"


@pytest.mark.parametrize(
    ("stream_error", "action", "explicit"),
    [
        (
            f"denied: User: {ROLE_SESSION} is not authorized to perform: "
            f"ecr:InitiateLayerUpload on resource: {REPOSITORY} because no identity-based "
            "policy allows the ecr:InitiateLayerUpload action",
            "ecr:InitiateLayerUpload",
            False,
        ),
        (
            "denied: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
            f"ecr:PutImage on resource: {REPOSITORY} with an explicit deny in an "
            "identity-based policy",
            "ecr:PutImage",
            True,
        ),
        (
            f"denied: User: {ROLE_SESSION} is not authorized to perform: "
            f"ecr:BatchCheckLayerAvailability on resource: {REPOSITORY} with an explicit deny "
            "in a service control policy",
            "ecr:BatchCheckLayerAvailability",
            True,
        ),
        # Without the registry's "denied:" prefix, as older engines relay it.
        (
            f"User: {ROLE_SESSION} is not authorized to perform: ecr:CompleteLayerUpload on "
            f"resource: {REPOSITORY}",
            "ecr:CompleteLayerUpload",
            False,
        ),
    ],
)
def test_an_ecr_refusal_in_the_push_stream_names_the_action(
    stream_error: str, action: str, explicit: bool
) -> None:
    error = classify_stream_error(stream_error, REFERENCE, ECR_HINT)
    assert type(error) is AuthError
    wanted = f"{action} is explicitly denied" if explicit else f"missing {action}"
    assert f"push of {REFERENCE} was refused ({wanted})" in error.message
    assert action in error.hint
    if explicit:
        assert "remove the Deny" in error.hint
        assert "`shipit iam check" in error.hint
    else:
        assert "`shipit iam policy`" in error.hint


@pytest.mark.parametrize(
    "stream_error",
    [
        "denied: requested access to the resource is denied",
        "unauthorized: authentication required",
        "denied: Not Authorized",
    ],
)
def test_a_refusal_that_names_no_action_keeps_the_registry_hint(stream_error: str) -> None:
    error = classify_stream_error(stream_error, REFERENCE, ECR_HINT)
    assert type(error) is AuthError
    assert error.hint == ECR_HINT
    assert "missing" not in error.message


def test_an_expired_ecr_token_is_still_not_a_permission_problem() -> None:
    error = classify_stream_error(
        "denied: Your authorization token has expired. Reauthenticate and try again.",
        REFERENCE,
        ECR_HINT,
    )
    assert "expired" in error.message
    assert "missing" not in error.message


def test_an_aws_api_refusal_names_the_action() -> None:
    client_error = botocore.exceptions.ClientError(
        {
            "Error": {
                "Code": "AccessDeniedException",
                "Message": f"User: {ROLE_SESSION} is not authorized to perform: "
                f"ecr:CreateRepository on resource: {REPOSITORY} because no identity-based "
                "policy allows the ecr:CreateRepository action",
            }
        },
        "CreateRepository",
    )
    error = explain_aws_error(client_error, "creating ECR repository site")
    assert isinstance(error, AuthError)
    assert error.message.startswith(
        "AWS refused creating ECR repository site (missing ecr:CreateRepository)"
    )
    assert "`shipit iam policy`" in error.hint


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Access Denied",
        "User is not authorized to perform this operation",
    ],
)
def test_messages_without_an_action_name_none(message: str) -> None:
    assert refused_action(message) is None


@pytest.mark.parametrize(
    ("caller", "principal"),
    [
        (ROLE_SESSION, "arn:aws:iam::123456789012:role/ci-deploy"),
        (
            "arn:aws-cn:sts::123456789012:assumed-role/deploy/session",
            "arn:aws-cn:iam::123456789012:role/deploy",
        ),
        ("arn:aws:iam::123456789012:user/ci", "arn:aws:iam::123456789012:user/ci"),
        ("arn:aws:iam::123456789012:user/team/ci", "arn:aws:iam::123456789012:user/team/ci"),
        ("arn:aws:iam::123456789012:root", None),
        ("arn:aws:sts::123456789012:federated-user/alice", None),
        ("arn:aws:sts::123456789012:user/moto", None),
    ],
)
def test_the_simulated_principal_of_a_caller(caller: str, principal: str | None) -> None:
    assert simulation_principal(caller) == principal


def test_the_context_of_an_iam_user_names_the_user() -> None:
    context = caller_context(
        "arn:aws:iam::123456789012:user/team/ci", access_key="AKIAIOSFODNN7EXAMPLE"
    )
    assert context.entries() == [
        {"ContextKeyName": "aws:username", "ContextKeyValues": ["ci"], "ContextKeyType": "string"},
        {
            "ContextKeyName": "aws:PrincipalArn",
            "ContextKeyValues": ["arn:aws:iam::123456789012:user/team/ci"],
            "ContextKeyType": "string",
        },
        {
            "ContextKeyName": "aws:PrincipalAccount",
            "ContextKeyValues": ["123456789012"],
            "ContextKeyType": "string",
        },
    ]
    # A long-term key never has aws:MultiFactorAuthPresent: passing "false" would be wrong.
    assert context.mfa == "absent (long-term access key)"
    assert context.describe().endswith("MFA absent (long-term access key)")


def test_the_context_of_a_role_session_names_role_and_session() -> None:
    context = caller_context(
        ROLE_SESSION,
        role_arn="arn:aws:iam::123456789012:role/deploy/ci-deploy",
        role_id="AROAEXAMPLEID",
        access_key="ASIAEXAMPLE",
        mfa_serial="arn:aws:iam::123456789012:mfa/alice",
    )
    values = {entry["ContextKeyName"]: entry["ContextKeyValues"] for entry in context.entries()}
    session = ROLE_SESSION.rsplit("/", 1)[-1]
    assert values == {
        "aws:PrincipalArn": ["arn:aws:iam::123456789012:role/deploy/ci-deploy"],
        "aws:PrincipalAccount": ["123456789012"],
        "aws:userid": [f"AROAEXAMPLEID:{session}"],
        "aws:MultiFactorAuthPresent": ["true"],
    }
    assert "aws:username" not in values
    assert context.mfa == "present"


def test_a_role_session_without_role_details_still_names_the_role() -> None:
    context = caller_context(ROLE_SESSION, access_key="ASIAEXAMPLE")
    values = {entry["ContextKeyName"]: entry["ContextKeyValues"] for entry in context.entries()}
    assert values["aws:PrincipalArn"] == ["arn:aws:iam::123456789012:role/ci-deploy"]
    assert "aws:userid" not in values
    assert context.mfa == "unknown"


def test_a_refused_simulation_names_the_keys_it_lacked() -> None:
    refused = SimulatedDecision(
        "ecr:PutImage", "*", "implicitDeny", ("aws:MultiFactorAuthPresent",)
    )
    assert refused.describe() == (
        "ecr:PutImage (implicitDeny; depends on aws:MultiFactorAuthPresent)"
    )
    assert SimulatedDecision("ecr:PutImage", "*", "explicitDeny").describe() == (
        "ecr:PutImage (explicitDeny)"
    )
