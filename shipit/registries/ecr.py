"""AWS ECR through boto3: the caller's identity, the repository, and a push token.

Credentials come from boto3's default chain (environment, profile, SSO, role), so shipit never
asks for or stores an AWS secret. The ECR token is decoded in memory and handed to each push;
nothing is written to ~/.docker/config.json.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from botocore.config import Config

from shipit.errors import AuthError, AwsError, ConfigError, RootUserError
from shipit.iam.refusal import refused_action
from shipit.redact import register_secret

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

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def root_refusal(identity: CallerIdentity) -> RootUserError:
    return RootUserError(
        f"the AWS credentials are the root user of account {identity.account} ({identity.arn}); "
        "root keys can do anything in the account and cannot be limited by a policy, so a leak "
        "from CI loses the whole account"
    )


def _explain(
    error: botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError, doing: str
) -> Exception:
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AuthError(
            f"no AWS credentials found while {doing}",
            "set AWS_PROFILE, run `aws sso login`, or give the job a role (OIDC in CI)",
        )
    if isinstance(error, botocore.exceptions.NoRegionError):
        return ConfigError(
            f"no AWS region while {doing}", "set AWS_REGION or aws_region in shipit.toml"
        )
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return AwsError(
            f"cannot reach AWS while {doing}: {error}", "check the network or AWS_ENDPOINT_URL"
        )
    if isinstance(error, botocore.exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", ""))
        if code in _DENIED_CODES:
            refusal = refused_action(message)
            if refusal is None:
                return AuthError(
                    f"AWS refused {doing}: {message}",
                    "grant the identity the policy printed by `shipit iam policy`",
                )
            return AuthError(
                f"AWS refused {doing} ({refusal.describe()}): {message}", refusal.hint()
            )
        if code in _EXPIRED_CODES:
            return AuthError(
                f"the AWS credentials have expired while {doing}", "refresh them and run again"
            )
        return AwsError(f"AWS error while {doing}: {code}: {message}")
    return AwsError(f"AWS error while {doing}: {error}")


class Ecr:
    def __init__(self, region: str) -> None:
        if not region:
            raise ConfigError(
                "no AWS region for ECR", "set AWS_REGION or aws_region in shipit.toml"
            )
        self.region = region
        config = Config(region_name=region, retries=_AWS_RETRIES)  # type: ignore[arg-type]
        session = boto3.session.Session()
        self._ecr: ECRClient = session.client("ecr", config=config)
        self._sts: STSClient = session.client("sts", config=config)

    def _call(self, doing: str, function: Any, **kwargs: Any) -> Any:
        try:
            return function(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _explain(error, doing) from error

    def caller(self) -> CallerIdentity:
        answer = self._call("asking STS who the caller is", self._sts.get_caller_identity)
        return CallerIdentity(account=str(answer["Account"]), arn=str(answer["Arn"]))

    def repository(self, name: str) -> Repository | None:
        try:
            answer = self._ecr.describe_repositories(repositoryNames=[name])
        except self._ecr.exceptions.RepositoryNotFoundException:
            return None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _explain(error, f"describing ECR repository {name}") from error
        return _repository(answer["repositories"][0])

    def create_repository(self, name: str, tag_mutability: str, scan_on_push: bool) -> Repository:
        answer = self._call(
            f"creating ECR repository {name}",
            self._ecr.create_repository,
            repositoryName=name,
            imageTagMutability=tag_mutability,
            imageScanningConfiguration={"scanOnPush": scan_on_push},
        )
        return _repository(answer["repository"])

    def token(self) -> RegistryToken:
        answer = self._call("getting an ECR authorization token", self._ecr.get_authorization_token)
        data = answer["authorizationData"][0]
        decoded = base64.b64decode(data["authorizationToken"]).decode("utf-8")
        username, _, password = decoded.partition(":")
        register_secret(password)
        register_secret(str(data["authorizationToken"]))
        endpoint = (
            str(data.get("proxyEndpoint", "")).removeprefix("https://").removeprefix("http://")
        )
        return RegistryToken(username=username, password=password, endpoint=endpoint.rstrip("/"))


def _repository(data: Any) -> Repository:
    return Repository(
        name=str(data["repositoryName"]),
        uri=str(data["repositoryUri"]),
        arn=str(data["repositoryArn"]),
        tag_mutability=str(data.get("imageTagMutability", "MUTABLE")),
        scan_on_push=bool(data.get("imageScanningConfiguration", {}).get("scanOnPush", False)),
    )
