"""The AWS access that shipit's own push needs, and the least-privilege policy granting it.

Pure logic: no boto3, no network. `shipit iam policy` prints `policy_for(required_access(...))`, and
`shipit iam check` evaluates a user's policy against `required_access`; both come from the
same list, so the printed policy and the check can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shipit.errors import UsageError
from shipit.regions import REGION

# [0-9] rather than \d: \d also matches non-ASCII digits, which no AWS name contains.
_ISO_PARTITIONS = {
    "-iso": "aws-iso",
    "-isob": "aws-iso-b",
    "-isoe": "aws-iso-e",
    "-isof": "aws-iso-f",
}
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_REPOSITORY_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_REPOSITORY_NAME_LENGTH = range(2, 257)

# GetAuthorizationToken has no resource-level permissions: IAM only accepts it on "*".
AUTHORIZATION_ACTION = "ecr:GetAuthorizationToken"
# What a push signed with a KMS key (signing_key = awskms://...) asks of that key.
SIGNING_ACTIONS = ("kms:GetPublicKey", "kms:Sign")
SIGNING_SID = "ShipitSigningKey"

# What `docker push` does against ECR: check which layers exist, upload the missing ones,
# write the manifest, and read manifests back (the engine looks up existing tags).
# GetDownloadUrlForLayer reads a blob of the repository: the config of the image a tag
# already holds, whose labels tell a CI re-run of the same commit (rebuilt with new
# timestamps, so another digest) that the tag holds its build, which it then keeps.
PUSH_ACTIONS: tuple[str, ...] = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    AUTHORIZATION_ACTION,
)

DESCRIBE_REPOSITORY_ACTION = "ecr:DescribeRepositories"
# shipit creates a missing repository with scan-on-push and a tag mutability setting. Both
# are parameters of CreateRepository itself, so PutImageScanningConfiguration and
# PutImageTagMutability are not needed. Tags at creation would need ecr:TagResource and a
# customer KMS key would need kms grants; shipit passes neither, so neither is granted.
CREATE_REPOSITORY_ACTION = "ecr:CreateRepository"
DESCRIBE_IMAGES_ACTION = "ecr:DescribeImages"

# The IAM actions ECR checks for each Registry API request (by the path's kind and the
# method): what names a refusal that names only the request. A PUT that ends an upload may
# carry its last bytes, so either of its two actions can be the one refused.
_REGISTRY_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("manifests", "GET"): ("ecr:BatchGetImage",),
    ("manifests", "HEAD"): ("ecr:BatchGetImage",),
    ("manifests", "PUT"): ("ecr:PutImage",),
    ("manifests", "DELETE"): ("ecr:BatchDeleteImage",),
    ("blobs", "HEAD"): ("ecr:BatchCheckLayerAvailability",),
    ("blobs", "GET"): ("ecr:GetDownloadUrlForLayer",),
    ("blobs/uploads", "POST"): ("ecr:InitiateLayerUpload",),
    ("blobs/uploads", "PATCH"): ("ecr:UploadLayerPart",),
    ("blobs/uploads", "PUT"): ("ecr:UploadLayerPart", "ecr:CompleteLayerUpload"),
    ("tags", "GET"): ("ecr:ListImages",),
}
_REGISTRY_REQUEST = re.compile(
    r"(?:[a-z]+://[^/]+)?/v2/.+?/(manifests|blobs/uploads|blobs|tags)(?:/[^?]*)?(\?.*)?"
)

POLICY_VERSION = "2012-10-17"
AUTHORIZATION_SID = "ShipitGetAuthorizationToken"
REPOSITORY_SID = "ShipitPushToRepository"


@dataclass(frozen=True, order=True)
class RequiredAccess:
    """One IAM action on one resource (an ARN, or "*") that shipit's push performs."""

    action: str
    resource: str


def registry_actions(method: str, url: str) -> tuple[str, ...]:
    """The IAM actions ECR may check for one Registry API request (a path or a URL); ()
    when it is none, or a cross-repository mount, which also reads another repository."""
    match = _REGISTRY_REQUEST.fullmatch(url)
    if match is None or "mount=" in (match.group(2) or ""):
        return ()
    return _REGISTRY_ACTIONS.get((match.group(1), method.upper()), ())


def partition_for_region(region: str) -> str:
    """The AWS partition ("aws", "aws-cn", "aws-us-gov", "aws-iso*") that holds `region`."""
    match = REGION.fullmatch(region)
    if match is None:
        raise UsageError(
            f"region {region!r} is not an AWS region name",
            "pass a region such as us-east-1 (lower case, with its number)",
        )
    qualifier = match.group(1)
    if qualifier == "-gov":
        return "aws-us-gov"
    if qualifier is not None:
        if qualifier not in _ISO_PARTITIONS:
            raise UsageError(
                f"region {region!r} is in no known AWS partition",
                "pass a commercial, China, GovCloud or ISO region such as us-east-1",
            )
        return _ISO_PARTITIONS[qualifier]
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws"


def validate_account_id(account: str) -> str:
    """Return `account` when it is a 12-digit AWS account id."""
    if _ACCOUNT_ID.fullmatch(account) is None:
        raise UsageError(
            f"account id {account!r} is not 12 digits", "pass the 12-digit AWS account id"
        )
    return account


def validate_repository_name(name: str) -> str:
    """Return `name` when ECR accepts it as a repository name."""
    if len(name) not in _REPOSITORY_NAME_LENGTH:
        raise UsageError(
            f"repository name {name!r} has {len(name)} characters, ECR allows 2 to 256",
            "pass a shorter or longer repository name",
        )
    if _REPOSITORY_NAME.fullmatch(name) is None:
        raise UsageError(
            f"repository name {name!r} is not a valid ECR repository name",
            "use lower-case letters and digits, separated by single '.', '_', '-' or '/'",
        )
    return name


def repository_arn(partition: str, region: str, account: str, name: str) -> str:
    """The ARN of ECR repository `name`, after checking every part of it."""
    region_partition = partition_for_region(region)
    if partition != region_partition:
        raise UsageError(
            f"region {region!r} is in partition {region_partition!r}, not {partition!r}",
            f"use partition {region_partition!r} for this region",
        )
    validate_account_id(account)
    validate_repository_name(name)
    return f"arn:{partition}:ecr:{region}:{account}:repository/{name}"


def required_access(
    region: str,
    account: str,
    repository: str,
    *,
    describe_repository: bool = True,
    create_repository: bool = True,
    describe_images: bool = True,
) -> list[RequiredAccess]:
    """Every (action, resource) a push performs: the token on "*", then the repository's.

    The flags name optional features of the push; turning one off drops its action.
    """
    arn = repository_arn(partition_for_region(region), region, account, repository)
    repository_actions = {action for action in PUSH_ACTIONS if action != AUTHORIZATION_ACTION}
    optional_actions = {
        DESCRIBE_REPOSITORY_ACTION: describe_repository,
        CREATE_REPOSITORY_ACTION: create_repository,
        DESCRIBE_IMAGES_ACTION: describe_images,
    }
    repository_actions |= {action for action, wanted in optional_actions.items() if wanted}
    return [RequiredAccess(AUTHORIZATION_ACTION, "*")] + [
        RequiredAccess(action, arn) for action in sorted(repository_actions)
    ]


def signing_access(key_arn: str) -> list[RequiredAccess]:
    """What a push signed with the KMS key `key_arn` performs on it."""
    return [RequiredAccess(action, key_arn) for action in SIGNING_ACTIONS]


def policy_for(accesses: list[RequiredAccess]) -> dict[str, Any]:
    """The identity policy that allows exactly `accesses` (as `required_access` lists them:
    the token on "*", then one repository's actions; then, for a push signed with a KMS
    key, the key's)."""
    arn = next(access.resource for access in accesses if ":ecr:" in access.resource)
    statements: list[dict[str, Any]] = [
        {
            "Sid": AUTHORIZATION_SID,
            "Effect": "Allow",
            "Action": [AUTHORIZATION_ACTION],
            "Resource": "*",
        },
        {
            "Sid": REPOSITORY_SID,
            "Effect": "Allow",
            "Action": sorted(access.action for access in accesses if access.resource == arn),
            "Resource": arn,
        },
    ]
    if keys := sorted({access.resource for access in accesses if ":kms:" in access.resource}):
        statements.append(
            {
                "Sid": SIGNING_SID,
                "Effect": "Allow",
                "Action": list(SIGNING_ACTIONS),
                "Resource": keys[0] if len(keys) == 1 else keys,
            }
        )
    return {"Version": POLICY_VERSION, "Statement": statements}
