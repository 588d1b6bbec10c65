"""The local IAM identity-policy evaluator, and the push policy judged by it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipit.errors import ConfigError, ExitCode, UsageError
from shipit.iam.actions import RequiredAccess, policy_for, required_access
from shipit.iam.evaluator import (
    Decision,
    Policy,
    all_allowed,
    evaluate,
    evaluate_all,
)
from shipit.iam.policy_document import load_policy, parse_policy

ACCOUNT = "123456789012"
REPO = "arn:aws:ecr:us-east-1:123456789012:repository/shipit-example"
OTHER_REPO = "arn:aws:ecr:us-east-1:123456789012:repository/other"


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def doc(*statements: dict[str, Any], version: str = "2012-10-17") -> dict[str, Any]:
    return {"Version": version, "Statement": list(statements)}


SOME_CONDITION = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}
PUT = "ecr:PutImage"
REPO_PREFIX = "arn:aws:ecr:us-east-1:123456789012:repository/"
ANY_REGION_REPO = "arn:aws:ecr:*:*:repository/"

PolicySpec = list[dict[str, Any]] | dict[str, list[dict[str, Any]] | dict[str, Any]]


def as_policies(spec: PolicySpec) -> list[Policy]:
    """A list of statements is the one policy "a.json"; a dict maps sources to policies."""
    sources = {"a.json": spec} if isinstance(spec, list) else spec
    return [
        parse_policy(doc(*value) if isinstance(value, list) else value, source)
        for source, value in sources.items()
    ]


def case(
    name: str, policies: PolicySpec, expected: str, action: str = PUT, resource: str = REPO
) -> object:
    return pytest.param(policies, action, resource, expected, id=name)


# Each row: the policies, then the expected "decision[ by statement in source]".
# The request is ecr:PutImage on REPO unless the row says otherwise.
TABLE = [
    # default deny, and explicit Deny beating Allow
    case("no-policy-at-all", [], "implicit_deny"),
    case("allows-another-action", [allow("ecr:BatchGetImage", REPO)], "implicit_deny"),
    case("exact-allow", [allow(PUT, REPO)], "allowed by Statement[0] in a.json"),
    case(
        "deny-in-one-policy-beats-allow-in-another",
        {"a.json": [allow("ecr:*")], "b.json": [deny(PUT, REPO)]},
        "explicit_deny by Statement[0] in b.json",
    ),
    case(
        "deny-after-allow-in-one-policy",
        [allow("*"), deny("ecr:Put*", REPO, Sid="NoPush")],
        "explicit_deny by NoPush in a.json",
    ),
    # Action and NotAction, wildcards, case
    case("action-star", [allow("ecr:*", REPO)], "allowed by Statement[0] in a.json"),
    case("action-prefix-misses", [allow("ecr:Put*")], "implicit_deny", "ecr:BatchGetImage"),
    case("question-mark-is-one-char", [allow("ecr:PutImag?")], "allowed by Statement[0] in a.json"),
    case("question-mark-is-not-zero-chars", [allow("ecr:PutImage?")], "implicit_deny"),
    case("policy-action-any-case", [allow("ECR:putimage")], "allowed by Statement[0] in a.json"),
    case(
        "request-action-any-case", [allow(PUT)], "allowed by Statement[0] in a.json", "ECR:PUTIMAGE"
    ),
    case(
        "notaction-allow-over-grants-everything-else",
        [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}],
        "allowed by Statement[0] in a.json",
        "ecr:DeleteRepository",
    ),
    case(
        "notaction-allow-excludes-what-it-lists",
        [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}],
        "implicit_deny",
        "iam:CreateUser",
        "*",
    ),
    case(
        "notaction-deny-denies-everything-else",
        [allow("*"), {"Effect": "Deny", "NotAction": "ecr:*", "Resource": "*"}],
        "explicit_deny by Statement[1] in a.json",
        "s3:GetObject",
        "arn:aws:s3:::bucket/key",
    ),
    # Resource and NotResource, wildcards, case
    case("resource-star", [allow(PUT, REPO_PREFIX + "*")], "allowed by Statement[0] in a.json"),
    # Five parts, not six: whether that `*` spans the region and the account is not sure.
    case(
        "resource-star-across-colons-is-undecided",
        [allow(PUT, "arn:aws:ecr:*:repository/shipit-example")],
        "undecided by Statement[0] in a.json",
    ),
    case(
        "resource-prefix-misses",
        [allow(PUT, REPO_PREFIX + "shipit-*")],
        "implicit_deny",
        resource=OTHER_REPO,
    ),
    case(
        "resource-question-mark",
        [allow(PUT, "arn:aws:ecr:us-east-?:123456789012:repository/*")],
        "allowed by Statement[0] in a.json",
    ),
    case("brackets-are-no-character-class", [allow(PUT, REPO_PREFIX + "[s]*")], "implicit_deny"),
    case(
        "resource-is-case-sensitive", [allow(PUT, REPO_PREFIX + "Shipit-Example")], "implicit_deny"
    ),
    case(
        "notresource-allows-the-rest",
        [{"Effect": "Allow", "Action": "ecr:*", "NotResource": OTHER_REPO}],
        "allowed by Statement[0] in a.json",
    ),
    case(
        "notresource-excludes-what-it-lists",
        [{"Effect": "Allow", "Action": "ecr:*", "NotResource": OTHER_REPO}],
        "implicit_deny",
        resource=OTHER_REPO,
    ),
    # value and Statement shapes
    case(
        "lists-of-values",
        [allow(["ecr:BatchGetImage", PUT], [OTHER_REPO, REPO])],
        "allowed by Statement[0] in a.json",
    ),
    case(
        "statement-as-one-object",
        {"a.json": {"Version": "2012-10-17", "Statement": allow(PUT, REPO)}},
        "allowed by Statement[0] in a.json",
    ),
    # Conditions and policy variables are never judged as matching
    case(
        "conditional-allow",
        [allow(PUT, Sid="Mfa", Condition=SOME_CONDITION)],
        "conditional by Mfa in a.json",
    ),
    case(
        "unconditional-allow-beside-conditional-allow",
        [allow(PUT, Condition=SOME_CONDITION), allow("ecr:*")],
        "allowed by Statement[1] in a.json",
    ),
    case(
        "conditional-allow-for-another-action",
        [allow(PUT, Condition=SOME_CONDITION)],
        "implicit_deny",
        "ecr:BatchGetImage",
    ),
    case(
        "conditional-deny-blocks-allow",
        {"a.json": [allow("ecr:*")], "b.json": [deny(PUT, Sid="Mfa", Condition=SOME_CONDITION)]},
        "conditional by Mfa in b.json",
    ),
    case(
        "unconditional-deny-beats-conditional-deny",
        {"a.json": [allow("*"), deny(PUT, Condition=SOME_CONDITION)], "b.json": [deny("ecr:*")]},
        "explicit_deny by Statement[0] in b.json",
    ),
    case(
        "conditional-deny-without-any-allow",
        [deny(PUT, Condition=SOME_CONDITION)],
        "implicit_deny",
    ),
    case(
        "empty-condition-tests-nothing",
        [allow(PUT, Condition={})],
        "allowed by Statement[0] in a.json",
    ),
    case(
        "policy-variable-needs-the-request",
        [allow(PUT, ANY_REGION_REPO + "${aws:username}")],
        "conditional by Statement[0] in a.json",
    ),
    case(
        "policy-variable-that-cannot-match",
        [allow(PUT, ANY_REGION_REPO + "${aws:username}/*")],
        "implicit_deny",
    ),
    case(
        "no-policy-variables-in-2008-10-17",
        {"a.json": doc(allow(PUT, ANY_REGION_REPO + "${aws:username}"), version="2008-10-17")},
        "implicit_deny",
    ),
    case("escaped-star-is-literal", [allow(PUT, REPO_PREFIX + "${*}")], "implicit_deny"),
    # several policies, as attached to a user and its groups
    case(
        "several-policies-combine",
        {"push.json": [allow(PUT, REPO)], "read.json": [allow("ecr:Describe*", Sid="Read")]},
        "allowed by Read in read.json",
        "ecr:DescribeImages",
    ),
]


@pytest.mark.parametrize(("policies", "action", "resource", "expected"), TABLE)
def test_decision_table(policies: PolicySpec, action: str, resource: str, expected: str) -> None:
    result = evaluate(as_policies(policies), action, resource)
    by = f" by {result.statement} in {result.source}" if result.statement else ""
    assert f"{result.decision}{by}" == expected
    assert result.allowed == expected.startswith("allowed")
    assert (result.action, result.resource) == (action, resource)
    assert (result.source is None) == (result.statement is None)


def test_decision_to_json() -> None:
    policies = as_policies({"p.json": [allow("ecr:*", REPO, Sid="Push")]})
    allowed = evaluate(policies, "ecr:PutImage", REPO).to_json()
    assert allowed == {
        "action": "ecr:PutImage",
        "resource": REPO,
        "decision": "allowed",
        "statement": "Push",
        "source": "p.json",
        "reason": "Push in p.json allows it",
        "conditions": [],
    }
    denied = evaluate(policies, "s3:GetObject", "*").to_json()
    assert (denied["decision"], denied["statement"], denied["source"]) == (
        "implicit_deny",
        None,
        None,
    )
    assert json.loads(json.dumps(denied)) == denied


def test_conditional_reason_names_the_condition() -> None:
    policies = as_policies({"p.json": [allow("ecr:*", Sid="Mfa", Condition=SOME_CONDITION)]})
    reason = evaluate(policies, "ecr:PutImage", REPO).reason
    assert reason.startswith("Mfa in p.json allows it only depending on its Condition")


@pytest.mark.parametrize(
    ("action", "resource"),
    [("iam:*", "*"), ("PutImage", REPO), ("ecr:Put?mage", REPO), ("ecr:PutImage", "repo")],
)
def test_request_must_be_one_action_on_an_arn(action: str, resource: str) -> None:
    with pytest.raises(UsageError) as caught:
        evaluate([], action, resource)
    assert (repr(action) in caught.value.message) or (repr(resource) in caught.value.message)


def test_evaluate_all_and_all_allowed() -> None:
    policies = as_policies({"p.json": [allow(PUT, REPO)]})
    checks = [RequiredAccess("ecr:PutImage", REPO), RequiredAccess("ecr:PutImage", OTHER_REPO)]
    decisions = evaluate_all(policies, checks)
    assert [d.decision for d in decisions] == ["allowed", "implicit_deny"]
    assert [d.resource for d in decisions] == [REPO, OTHER_REPO]
    assert not all_allowed(decisions)
    assert all_allowed(decisions[:1])


# --- malformed policies -----------------------------------------------------------------

MALFORMED = [
    pytest.param([], "policy.json: a policy must be a JSON object", id="not-an-object"),
    pytest.param(
        {"Version": "2012-10-18", "Statement": []},
        "policy.json: Version '2012-10-18' is not an IAM policy language version",
        id="bad-version",
    ),
    pytest.param({"Version": "2012-10-17"}, "policy.json: Statement is missing", id="no-statement"),
    pytest.param(
        {"Version": "2012-10-17", "Statement": "Allow"},
        "policy.json: Statement is missing or is not an object",
        id="statement-is-a-string",
    ),
    pytest.param(
        {"Version": "2012-10-17", "Statements": []},
        "policy.json: unknown policy element Statements",
        id="unknown-policy-element",
    ),
    pytest.param(
        doc(allow("ecr:*"), allow("ecr:*"), {**allow("ecr:*"), "Effect": "allow"}),
        "policy.json: Statement[2]: Effect must be Allow or Deny, not 'allow'",
        id="effect-lower-case",
    ),
    pytest.param(
        doc({"Action": "ecr:*", "Resource": "*"}),
        "policy.json: Statement[0]: Effect must be Allow or Deny, not None",
        id="effect-missing",
    ),
    pytest.param(
        {"Version": "2012-10-17", "Statement": [allow("ecr:*"), "Allow ecr:*"]},
        "policy.json: Statement[1]: a statement must be a JSON object",
        id="statement-not-an-object",
    ),
    pytest.param(
        doc(allow("ecr:*", Sid="Push", Principal={"AWS": "*"})),
        "policy.json: Statement[0] (Sid 'Push'): Principal is not allowed in an identity policy",
        id="principal",
    ),
    pytest.param(
        doc(allow("ecr:*", NotAction="iam:*")),
        "policy.json: Statement[0]: has both Action and NotAction",
        id="action-and-notaction",
    ),
    pytest.param(
        doc({"Effect": "Allow", "Resource": "*"}),
        "policy.json: Statement[0]: needs Action or NotAction",
        id="no-action",
    ),
    pytest.param(
        doc({"Effect": "Allow", "Action": "ecr:*"}),
        "policy.json: Statement[0]: needs Resource or NotResource",
        id="no-resource",
    ),
    pytest.param(
        doc(allow("ecr:*", NotResource=REPO)),
        "policy.json: Statement[0]: has both Resource and NotResource",
        id="resource-and-notresource",
    ),
    pytest.param(
        doc(allow([])),
        "policy.json: Statement[0]: Action must be a string or a non-empty list of strings",
        id="empty-action-list",
    ),
    pytest.param(
        doc(allow("ecr:*", [REPO, 7])),
        "policy.json: Statement[0]: Resource must be a string or a non-empty list of strings",
        id="resource-not-a-string",
    ),
    pytest.param(
        doc(allow("ecr:*"), allow("PutImage", Sid="Push")),
        "policy.json: Statement[1] (Sid 'Push'): Action: 'PutImage' is not an action",
        id="action-without-service",
    ),
    pytest.param(
        doc(allow("ecr:*", "shipit-example")),
        "policy.json: Statement[0]: Resource: 'shipit-example' is neither an ARN nor *",
        id="resource-not-an-arn",
    ),
    pytest.param(
        doc({**allow("ecr:*"), "Resources": "*"}),
        "policy.json: Statement[0]: unknown statement element Resources",
        id="unknown-statement-element",
    ),
    pytest.param(
        doc(allow("ecr:*", Sid="push-all")),
        "policy.json: Statement[0] (Sid 'push-all'): Sid must be letters and digits only",
        id="sid-with-hyphen",
    ),
    pytest.param(
        doc(allow("ecr:*", Condition="MFA")),
        "policy.json: Statement[0]: Condition must be a JSON object",
        id="condition-not-an-object",
    ),
]


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_policy_names_file_and_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: object, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("policy.json").write_text(json.dumps(document, indent=2))
    with pytest.raises(ConfigError) as caught:
        load_policy("policy.json")
    assert caught.value.message.startswith(message)
    assert caught.value.hint
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "\n" not in caught.value.one_line()


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{\n  "Version": "2012-10-17",\n  "Statement": [}\n')
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert caught.value.message.startswith(f"{path}: line 3, column 17: invalid JSON")


def test_missing_policy_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert caught.value.message.startswith(f"{path}: cannot read the policy file")


def test_policy_file_with_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc(allow("ecr:*", REPO))).encode())
    policy = load_policy(path)
    assert evaluate([policy], "ecr:PutImage", REPO).source == str(path)


def test_missing_version_means_2008_10_17() -> None:
    policy = parse_policy({"Statement": allow("ecr:*")}, "p.json")
    assert policy.version == "2008-10-17"


# --- the push policy shipit prints, judged by the evaluator ---------------------------

ALL_ECR_ACTIONS = [
    "BatchCheckLayerAvailability",
    "BatchDeleteImage",
    "BatchGetImage",
    "BatchGetRepositoryScanningConfiguration",
    "BatchImportUpstreamImage",
    "CompleteLayerUpload",
    "CreatePullThroughCacheRule",
    "CreateRepository",
    "CreateRepositoryCreationTemplate",
    "DeleteLifecyclePolicy",
    "DeletePullThroughCacheRule",
    "DeleteRegistryPolicy",
    "DeleteRepository",
    "DeleteRepositoryCreationTemplate",
    "DeleteRepositoryPolicy",
    "DescribeImageReplicationStatus",
    "DescribeImageScanFindings",
    "DescribeImages",
    "DescribePullThroughCacheRules",
    "DescribeRegistry",
    "DescribeRepositories",
    "DescribeRepositoryCreationTemplates",
    "GetAuthorizationToken",
    "GetDownloadUrlForLayer",
    "GetLifecyclePolicy",
    "GetLifecyclePolicyPreview",
    "GetRegistryPolicy",
    "GetRegistryScanningConfiguration",
    "GetRepositoryPolicy",
    "InitiateLayerUpload",
    "ListImages",
    "ListTagsForResource",
    "PutImage",
    "PutImageScanningConfiguration",
    "PutImageTagMutability",
    "PutLifecyclePolicy",
    "PutRegistryPolicy",
    "PutRegistryScanningConfiguration",
    "PutReplicationConfiguration",
    "ReplicateImage",
    "SetRepositoryPolicy",
    "StartImageScan",
    "StartLifecyclePolicyPreview",
    "TagResource",
    "UntagResource",
    "UploadLayerPart",
]


def push_policy(region: str = "us-east-1", **features: bool) -> Policy:
    document = policy_for(required_access(region, ACCOUNT, "shipit-example", **features))
    # Through JSON text, as a user would save and pass it to `shipit iam check`.
    return parse_policy(json.loads(json.dumps(document)), "shipit-policy.json")


def test_push_policy_allows_every_required_access() -> None:
    decisions = evaluate_all(
        [push_policy()], required_access("us-east-1", ACCOUNT, "shipit-example")
    )
    assert all_allowed(decisions)
    assert len(decisions) == 11
    assert {d.statement for d in decisions} == {
        "ShipitGetAuthorizationToken",
        "ShipitPushToRepository",
    }


def test_push_policy_allows_no_other_ecr_action_on_the_repository() -> None:
    policy = push_policy()
    allowed = {a for a in ALL_ECR_ACTIONS if evaluate([policy], f"ecr:{a}", REPO).allowed}
    required = {access.action for access in required_access("us-east-1", ACCOUNT, "shipit-example")}
    assert {f"ecr:{a}" for a in allowed} == required


def test_push_policy_allows_only_the_token_on_star() -> None:
    policy = push_policy()
    allowed = {a for a in ALL_ECR_ACTIONS if evaluate([policy], f"ecr:{a}", "*").allowed}
    assert allowed == {"GetAuthorizationToken"}


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("ecr:DeleteRepository", REPO),
        ("ecr:BatchDeleteImage", REPO),
        ("ecr:SetRepositoryPolicy", REPO),
        ("ecr:PutImage", OTHER_REPO),
        ("ecr:PutImage", REPO.replace("us-east-1", "us-west-2")),
        ("ecr:PutImage", REPO.replace(ACCOUNT, "210987654321")),
        ("ecr:PutImage", REPO + "/nested"),
        ("ecr:PutImage", "*"),
        ("iam:CreateUser", "*"),
        ("iam:PassRole", "arn:aws:iam::123456789012:role/admin"),
        ("s3:GetObject", "arn:aws:s3:::bucket/key"),
        ("sts:AssumeRole", "arn:aws:iam::123456789012:role/admin"),
    ],
)
def test_push_policy_allows_nothing_more(action: str, resource: str) -> None:
    decision = evaluate([push_policy()], action, resource)
    assert decision.decision == "implicit_deny"


def test_push_policy_without_optional_features_denies_them() -> None:
    policy = push_policy(describe_images=False, create_repository=False)
    decisions: list[Decision] = evaluate_all(
        [policy],
        [RequiredAccess("ecr:DescribeImages", REPO), RequiredAccess("ecr:CreateRepository", REPO)],
    )
    assert [d.decision for d in decisions] == ["implicit_deny", "implicit_deny"]
    assert evaluate([policy], "ecr:DescribeRepositories", REPO).allowed


def test_push_policy_for_china_region_is_for_the_aws_cn_partition() -> None:
    policy = push_policy("cn-north-1")
    china_repo = "arn:aws-cn:ecr:cn-north-1:123456789012:repository/shipit-example"
    assert evaluate([policy], "ecr:PutImage", china_repo).allowed
    commercial_repo = "arn:aws:ecr:cn-north-1:123456789012:repository/shipit-example"
    assert evaluate([policy], "ecr:PutImage", commercial_repo).decision == "implicit_deny"
    checks = required_access("cn-north-1", ACCOUNT, "shipit-example")
    assert all_allowed(evaluate_all([policy], checks))


def test_a_deny_policy_beside_the_push_policy_breaks_the_push() -> None:
    guard = parse_policy(doc(deny("ecr:PutImage", "*", Sid="Freeze")), "freeze.json")
    decisions = evaluate_all(
        [push_policy(), guard], required_access("us-east-1", ACCOUNT, "shipit-example")
    )
    assert not all_allowed(decisions)
    refused = [d for d in decisions if not d.allowed]
    assert [(d.action, d.decision, d.statement, d.source) for d in refused] == [
        ("ecr:PutImage", "explicit_deny", "Freeze", "freeze.json")
    ]
