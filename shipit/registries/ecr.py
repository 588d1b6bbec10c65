"""AWS ECR: the repository, and a push token, asked through the caller's `AwsSession`.

The ECR token is decoded in memory and handed to each push; nothing is written to
~/.docker/config.json.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shipit.aws import AwsSession, call_aws
from shipit.errors import AwsError, ConfigError
from shipit.redact import register_secret
from shipit.registries.credentials import Credentials

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

T = TypeVar("T")


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


class Ecr:
    def __init__(self, session: AwsSession) -> None:
        if not session.region:
            raise ConfigError(
                "no AWS region for ECR", "set AWS_REGION or aws_region in shipit.toml"
            )
        self.region = session.region
        self._ecr: ECRClient = session.client("ecr")

    def _call(self, doing: str, call: Callable[[], T]) -> T:
        return call_aws(doing, call)

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
