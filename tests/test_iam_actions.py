"""The access shipit's push needs: names, partitions, ARNs and the printed policy."""

from __future__ import annotations

import json

import pytest

from shipit.errors import ExitCode, UsageError
from shipit.iam.actions import (
    PUSH_ACTIONS,
    RequiredAccess,
    partition_for_region,
    policy_for,
    registry_actions,
    repository_arn,
    required_access,
    validate_account_id,
    validate_repository_name,
)
from shipit.iam.refusal import Refusal, refused_ecr_request, refused_request

ACCOUNT = "123456789012"
REPOSITORY = "shipit-example"
# \d would accept these; AWS account ids are ASCII digits only.
FULL_WIDTH_DIGITS = "\uff11" * 12
ARN = "arn:aws:ecr:us-east-1:123456789012:repository/shipit-example"


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("us-east-1", "aws"),
        ("eu-west-3", "aws"),
        ("ap-southeast-2", "aws"),
        ("cn-north-1", "aws-cn"),
        ("cn-northwest-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
        ("us-gov-east-1", "aws-us-gov"),
        ("us-iso-east-1", "aws-iso"),
        ("us-isob-east-1", "aws-iso-b"),
    ],
)
def test_partition_for_region(region: str, partition: str) -> None:
    assert partition_for_region(region) == partition


@pytest.mark.parametrize(
    "region",
    ["", "US-EAST-1", "us-east", "useast1", "us-east-1 ", "us_east_1", "us-isoz-east-1"],
)
def test_invalid_region_is_a_usage_error(region: str) -> None:
    with pytest.raises(UsageError) as caught:
        partition_for_region(region)
    assert repr(region) in caught.value.message
    assert caught.value.hint
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("region", "arn"),
    [
        ("cn-north-1", "arn:aws-cn:ecr:cn-north-1:123456789012:repository/shipit-example"),
        (
            "us-gov-west-1",
            "arn:aws-us-gov:ecr:us-gov-west-1:123456789012:repository/shipit-example",
        ),
        ("us-east-1", ARN),
    ],
)
def test_required_access_uses_the_partition_of_the_region(region: str, arn: str) -> None:
    accesses = required_access(region, ACCOUNT, REPOSITORY)
    assert {access.resource for access in accesses} == {"*", arn}


def test_repository_arn_refuses_a_partition_that_does_not_hold_the_region() -> None:
    with pytest.raises(UsageError, match="partition 'aws-cn', not 'aws'"):
        repository_arn("aws", "cn-north-1", ACCOUNT, REPOSITORY)


def test_valid_account_id_is_returned() -> None:
    assert validate_account_id("000000000042") == "000000000042"


@pytest.mark.parametrize(
    "account",
    ["1234", "", "12345678901a", "1234567890123", " 123456789012", FULL_WIDTH_DIGITS],
)
def test_account_id_that_is_not_12_digits_is_a_usage_error(account: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_account_id(account)
    assert caught.value.one_line() == (
        f"account id {account!r} is not 12 digits; pass the 12-digit AWS account id"
    )


def test_required_access_checks_the_account_id() -> None:
    with pytest.raises(UsageError, match="account id '1234' is not 12 digits"):
        required_access("us-east-1", "1234", REPOSITORY)


@pytest.mark.parametrize("name", ["shipit-example", "ab", "team/site", "a.b_c-d/e0", "x" * 256])
def test_valid_repository_names(name: str) -> None:
    assert validate_repository_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["a", "x" * 257, "Shipit", "-abc", "abc-", "a//b", "team/", "/team", "a..b", "a b", "é1"],
)
def test_invalid_repository_name_is_a_usage_error(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_repository_name(name)
    assert repr(name) in caught.value.message
    assert caught.value.hint


def test_push_actions_are_the_docker_push_actions_the_config_read_and_the_token() -> None:
    assert set(PUSH_ACTIONS) == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchGetImage",
        # The same-build check of a re-run reads the config of the image a tag holds.
        "ecr:GetDownloadUrlForLayer",
        "ecr:GetAuthorizationToken",
    }


def test_required_access_with_every_feature() -> None:
    assert required_access("us-east-1", ACCOUNT, REPOSITORY) == [
        RequiredAccess("ecr:GetAuthorizationToken", "*"),
        RequiredAccess("ecr:BatchCheckLayerAvailability", ARN),
        RequiredAccess("ecr:BatchGetImage", ARN),
        RequiredAccess("ecr:CompleteLayerUpload", ARN),
        RequiredAccess("ecr:CreateRepository", ARN),
        RequiredAccess("ecr:DescribeImages", ARN),
        RequiredAccess("ecr:DescribeRepositories", ARN),
        RequiredAccess("ecr:GetDownloadUrlForLayer", ARN),
        RequiredAccess("ecr:InitiateLayerUpload", ARN),
        RequiredAccess("ecr:PutImage", ARN),
        RequiredAccess("ecr:UploadLayerPart", ARN),
    ]


@pytest.mark.parametrize(
    ("feature", "action"),
    [
        ("describe_repository", "ecr:DescribeRepositories"),
        ("create_repository", "ecr:CreateRepository"),
        ("describe_images", "ecr:DescribeImages"),
    ],
)
def test_each_optional_feature_adds_exactly_its_action(feature: str, action: str) -> None:
    everything = required_access("us-east-1", ACCOUNT, REPOSITORY)
    without = required_access("us-east-1", ACCOUNT, REPOSITORY, **{feature: False})
    assert set(everything) - set(without) == {RequiredAccess(action, ARN)}
    assert set(without) < set(everything)


def test_the_push_policy_shape() -> None:
    document = policy_for(
        required_access("us-east-1", ACCOUNT, REPOSITORY, create_repository=False)
    )
    assert document == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ShipitGetAuthorizationToken",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": "*",
            },
            {
                "Sid": "ShipitPushToRepository",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:CompleteLayerUpload",
                    "ecr:DescribeImages",
                    "ecr:DescribeRepositories",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:InitiateLayerUpload",
                    "ecr:PutImage",
                    "ecr:UploadLayerPart",
                ],
                "Resource": ARN,
            },
        ],
    }


def test_the_push_policy_agrees_with_required_access() -> None:
    document = policy_for(required_access("cn-north-1", ACCOUNT, "team/site"))
    granted = {
        RequiredAccess(action, statement["Resource"])
        for statement in document["Statement"]
        for action in statement["Action"]
    }
    assert granted == set(required_access("cn-north-1", ACCOUNT, "team/site"))


def test_the_push_policy_is_deterministic_json() -> None:
    first = json.dumps(policy_for(required_access("us-east-1", ACCOUNT, REPOSITORY)))
    second = json.dumps(policy_for(required_access("us-east-1", ACCOUNT, REPOSITORY)))
    assert first == second
    actions = json.loads(first)["Statement"][1]["Action"]
    assert actions == sorted(actions)
    assert len(actions) == len(set(actions))


DIGEST = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("method", "url", "actions"),
    [
        ("PUT", "http://127.0.0.1:5000/v2/team/site/manifests/abc123", ("ecr:PutImage",)),
        ("HEAD", "/v2/site/manifests/latest", ("ecr:BatchGetImage",)),
        ("GET", f"/v2/site/blobs/{DIGEST}", ("ecr:GetDownloadUrlForLayer",)),
        ("HEAD", f"/v2/site/blobs/{DIGEST}", ("ecr:BatchCheckLayerAvailability",)),
        ("POST", "https://r.example/v2/site/blobs/uploads/", ("ecr:InitiateLayerUpload",)),
        ("PATCH", "/v2/site/blobs/uploads/u-1?_state=x", ("ecr:UploadLayerPart",)),
        (
            "PUT",
            f"/v2/site/blobs/uploads/u-1?digest={DIGEST}",
            ("ecr:UploadLayerPart", "ecr:CompleteLayerUpload"),
        ),
        ("GET", "/v2/site/tags/list", ("ecr:ListImages",)),
        # A mount also reads another repository: no one action names it.
        ("POST", f"/v2/site/blobs/uploads/?mount={DIGEST}&from=team/base", ()),
        ("GET", "/v2/", ()),
        ("GET", "/healthz", ()),
    ],
)
def test_registry_actions_name_what_ecr_checks_for_a_request(
    method: str, url: str, actions: tuple[str, ...]
) -> None:
    assert registry_actions(method, url) == actions


def test_a_containerd_refusal_names_the_action_of_the_refused_request() -> None:
    line = (
        'failed commit on ref "manifest-sha256:18a4": unexpected status from PUT request to '
        "http://127.0.0.1:44563/v2/site-1df29ac2d7/manifests/2ea44cb05c18: 403 Forbidden"
    )
    refusal = refused_ecr_request(line)
    assert refusal is not None
    assert refusal.action == "ecr:PutImage"
    assert refusal.describe() == "refused ecr:PutImage"
    assert "`shipit iam policy`" in refusal.hint()
    upload = "unexpected status from PUT request to http://h/v2/s/blobs/uploads/x: 403 Forbidden"
    assert refused_ecr_request(upload) == Refusal(
        "ecr:UploadLayerPart or ecr:CompleteLayerUpload", explicit=False, inferred=True
    )
    assert refused_ecr_request(line.replace("403 Forbidden", "401 Unauthorized")) is None


def test_a_bodyless_refusal_of_the_classic_engine_is_its_layer_check() -> None:
    # ECR answers HEAD without a body; the classic engine HEADs blobs to find existing layers.
    line = 'error parsing HTTP 403 response body: unexpected end of JSON input: ""'
    refusal = refused_ecr_request(line)
    assert refusal is not None
    assert refusal.action == "ecr:BatchCheckLayerAvailability"
    assert refused_request("HEAD", f"/v2/site/blobs/{DIGEST}") == refusal
    assert refused_request("GET", "/token") is None
