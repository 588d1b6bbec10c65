"""AWS ECR through boto3: the caller's identity, the repository, and a push token.

Credentials come from boto3's default chain (environment, profile, SSO, role), so shipit never
asks for or stores an AWS secret. The ECR token is decoded in memory and handed to each push;
nothing is written to ~/.docker/config.json.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions
import botocore.parsers
from botocore.config import Config

from shipit.errors import AuthError, AwsError, ConfigError, RootUserError, ShipitError
from shipit.iam.refusal import refused_action
from shipit.redact import register_secret
from shipit.registries.credentials import Credentials

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_sts import STSClient

_ROOT_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:root$")
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
    }
)
_EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_AWS_RETRIES = {"max_attempts": 5, "mode": "adaptive"}
T = TypeVar("T")


@dataclass(frozen=True)
class CallerIdentity:
    account: str
    arn: str

    @property
    def is_root(self) -> bool:
        return bool(_ROOT_ARN.match(self.arn))

    @property
    def partition(self) -> str:
        return self.arn.split(":")[1] if self.arn.startswith("arn:") else "aws"


@dataclass(frozen=True)
class Repository:
    name: str
    uri: str
    arn: str
    tag_mutability: str
    scan_on_push: bool


@dataclass(frozen=True)
class RegistryToken:
    username: str
    password: str = field(repr=False)
    endpoint: str  # host[:port], no scheme
    # When ECR stops accepting it (seconds since the epoch); None when the answer lacked it.
    expires_at: float | None = None

    @property
    def login(self) -> Credentials:
        return Credentials(self.username, password=self.password, source="ECR")


def root_refusal(identity: CallerIdentity) -> RootUserError:
    return RootUserError(
        f"the AWS credentials are the root user of account {identity.account} ({identity.arn}); "
        "root keys can do anything in the account and cannot be limited by a policy, so a leak "
        "from CI loses the whole account"
    )


# What botocore raises for an answer it cannot read, instead of a BotoCoreError: its parser's
# own error, or a lookup error from inside the parser when XML lacks what AWS always sends.
# The same errors from reading a parsed answer mean a field that AWS always sends is missing.
_UNREADABLE_ANSWER = (
    botocore.parsers.ResponseParserError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
)
AWS_FAILURES = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    *_UNREADABLE_ANSWER,
)
_NOT_AWS_HINT = "check AWS_ENDPOINT_URL and any HTTP(S) proxy between here and AWS, then run again"


def _sso_profile() -> str:
    return os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"


def explain_aws_error(error: Exception, doing: str) -> ShipitError:
    """One shipit error, with a hint, for whatever boto3 raised while `doing`."""
    if isinstance(error, botocore.exceptions.SSOError) or (
        isinstance(error, botocore.exceptions.TokenRetrievalError)
        and error.kwargs.get("provider") == "sso"
    ):
        # No cached SSO token, an expired one that cannot be refreshed, or one AWS refused.
        profile = _sso_profile()
        return AuthError(
            f"the AWS SSO login of profile {profile} has expired or is missing while {doing}",
            f"run `aws sso login --profile {profile}` and try again",
        )
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AuthError(
            f"no AWS credentials found while {doing}",
            "set AWS_PROFILE, run `aws sso login`, or give the job a role (OIDC in CI)",
        )
    if isinstance(error, botocore.exceptions.NoRegionError):
        return ConfigError(
            f"no AWS region while {doing}", "set AWS_REGION or aws_region in shipit.toml"
        )
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        return ConfigError(
            f"{error} while {doing}", "check AWS_PROFILE (`aws configure list-profiles`)"
        )
    if isinstance(error, botocore.exceptions.ReadTimeoutError):
        return AwsError(
            f"AWS did not answer in time while {doing}: {error}",
            "check the network path to AWS and AWS_ENDPOINT_URL, then run again",
        )
    if isinstance(error, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return AwsError(
            f"cannot reach AWS while {doing}: {error}",
            "check the network, any HTTP(S) proxy and AWS_ENDPOINT_URL, then run again",
        )
    if isinstance(error, botocore.exceptions.ClientError):
        return _explain_refusal(error, doing)
    if isinstance(error, _UNREADABLE_ANSWER):
        return AwsError(
            f"could not read the answer while {doing}: it is not an AWS response", _NOT_AWS_HINT
        )
    return AwsError(
        f"AWS error while {doing}: {error}",
        "check the AWS settings with `shipit doctor`, then run again",
    )


def _explain_refusal(error: botocore.exceptions.ClientError, doing: str) -> ShipitError:
    code = str(error.response.get("Error", {}).get("Code", ""))
    message = str(error.response.get("Error", {}).get("Message", ""))
    if code in _DENIED_CODES:
        refusal = refused_action(message)
        if refusal is None:
            return AuthError(
                f"AWS refused {doing}: {message}",
                "grant the identity the policy printed by `shipit iam policy`",
            )
        return AuthError(f"AWS refused {doing} ({refusal.describe()}): {message}", refusal.hint())
    if code in _EXPIRED_CODES:
        return AuthError(
            f"the AWS credentials have expired while {doing}", "refresh them and run again"
        )
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    if not code or code == status:
        # botocore makes the status the code when the body holds no AWS error.
        return AwsError(
            f"got HTTP {status or '?'} without an AWS error while {doing}",
            _NOT_AWS_HINT,
        )
    return AwsError(f"AWS error while {doing}: {code}: {message}")


class Ecr:
    def __init__(self, region: str) -> None:
        if not region:
            raise ConfigError(
                "no AWS region for ECR", "set AWS_REGION or aws_region in shipit.toml"
            )
        self.region = region
        config = Config(region_name=region, retries=_AWS_RETRIES)  # type: ignore[arg-type]
        try:
            session = boto3.session.Session()
            self._ecr: ECRClient = session.client("ecr", config=config)
            self._sts: STSClient = session.client("sts", config=config)
        except ValueError as error:  # botocore's "Invalid endpoint: ..."
            raise ConfigError(
                f"cannot use the AWS endpoint: {error}",
                "set AWS_ENDPOINT_URL to a URL such as https://ecr.us-east-1.amazonaws.com, "
                "or unset it",
            ) from error
        except botocore.exceptions.BotoCoreError as error:
            raise explain_aws_error(error, "setting up the AWS clients") from error

    def _call(self, doing: str, call: Callable[[], T]) -> T:
        """`call` makes one AWS request and reads its answer; every failure becomes one
        ShipitError naming `doing`."""
        try:
            return call()
        except AWS_FAILURES as error:
            raise explain_aws_error(error, doing) from error

    def caller(self) -> CallerIdentity:
        def ask() -> CallerIdentity:
            answer = self._sts.get_caller_identity()
            return CallerIdentity(account=str(answer["Account"]), arn=str(answer["Arn"]))

        return self._call("asking STS who the caller is", ask)

    def repository(self, name: str) -> Repository | None:
        def describe() -> Repository | None:
            try:
                answer = self._ecr.describe_repositories(repositoryNames=[name])
            except self._ecr.exceptions.RepositoryNotFoundException:
                return None
            return _repository(answer["repositories"][0])

        return self._call(f"describing ECR repository {name}", describe)

    def create_repository(self, name: str, tag_mutability: str, scan_on_push: bool) -> Repository:
        """The new repository; or the one another push created since shipit found none (two
        first pushes at once), which is as good: the push needs a repository, not to make it."""

        def create() -> Repository | None:
            try:
                answer = self._ecr.create_repository(
                    repositoryName=name,
                    imageTagMutability=tag_mutability,  # type: ignore[arg-type]
                    imageScanningConfiguration={"scanOnPush": scan_on_push},
                )
            except self._ecr.exceptions.RepositoryAlreadyExistsException:
                return None
            return _repository(answer["repository"])

        created = self._call(f"creating ECR repository {name}", create)
        existing = created or self.repository(name)
        if existing is None:
            raise AwsError(
                f"ECR said repository {name} exists, then that it does not (deleted meanwhile?)",
                "check who manages the repository, then push again",
            )
        return existing

    def token(self) -> RegistryToken:
        def fetch() -> RegistryToken:
            data = self._ecr.get_authorization_token()["authorizationData"][0]
            token = str(data["authorizationToken"])
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
            username, _, password = decoded.partition(":")
            register_secret(password)
            register_secret(token)
            endpoint = str(data.get("proxyEndpoint", ""))
            endpoint = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
            expires = data.get("expiresAt")
            return RegistryToken(
                username=username,
                password=password,
                endpoint=endpoint,
                expires_at=expires.timestamp() if isinstance(expires, datetime.datetime) else None,
            )

        return self._call("getting an ECR authorization token", fetch)


def _repository(data: Any) -> Repository:
    return Repository(
        name=str(data["repositoryName"]),
        uri=str(data["repositoryUri"]),
        arn=str(data["repositoryArn"]),
        tag_mutability=str(data.get("imageTagMutability", "MUTABLE")),
        scan_on_push=bool(data.get("imageScanningConfiguration", {}).get("scanOnPush", False)),
    )
