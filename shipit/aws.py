"""AWS through boto3: the session, the caller's identity, and every AWS failure as one error.

Credentials come from boto3's default chain (environment, profile, SSO, role), so shipit never
asks for or stores an AWS secret. One `AwsSession` serves everything a command asks AWS: ECR
(registries/ecr.py) and IAM (iam/identity.py) take it from their caller and make their clients
from it, so the profile is read and the credential chain resolved once.

This is the module that imports boto3 and botocore: importing it costs about 0.1 s, so it is
imported only where AWS is about to be asked (the push on a token cache miss, doctor, iam).
Whatever boto3 raises becomes one ShipitError with a hint in `explain_aws_error`, saying what
was being done.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions
import botocore.parsers
import botocore.session
from botocore.config import Config

from shipit.config import aws_profile
from shipit.errors import AuthError, AwsError, ConfigError, RootUserError, ShipitError
from shipit.iam.refusal import refused_action

if TYPE_CHECKING:
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


def explain_aws_error(error: Exception, doing: str) -> ShipitError:
    """One shipit error, with a hint, for whatever boto3 raised while `doing`."""
    if isinstance(error, botocore.exceptions.SSOError) or (
        isinstance(error, botocore.exceptions.TokenRetrievalError)
        and error.kwargs.get("provider") == "sso"
    ):
        # No cached SSO token, an expired one that cannot be refreshed, or one AWS refused.
        profile = aws_profile(os.environ)
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


def call_aws(doing: str, call: Callable[[], T]) -> T:
    """`call` makes one AWS request and reads its answer; every failure becomes one
    ShipitError naming `doing`."""
    try:
        return call()
    except AWS_FAILURES as error:
        raise explain_aws_error(error, doing) from error


class AwsSession:
    """One boto3 session in one region: its clients, the caller, the credentials it signs with.

    Clients made from it are safe to share between threads; the session itself is used by the
    thread that made it. Its botocore session is made here so that the profile's own settings
    are read through botocore's public API.
    """

    def __init__(self, region: str) -> None:
        self.region = region
        try:
            self._botocore = botocore.session.Session()
            self._boto3 = boto3.session.Session(botocore_session=self._botocore)
        except botocore.exceptions.BotoCoreError as error:
            raise explain_aws_error(error, "setting up the AWS clients") from error

    def client(
        self,
        service: str,
        options: Mapping[str, Any] | None = None,
        *,
        endpoint_url: str | None = None,
    ) -> Any:
        """A client of `service` in the session's region; `options` as botocore's Config takes
        them, else patient adaptive retries (a push would rather wait than fail).
        `endpoint_url`: another endpoint than AWS_ENDPOINT_URL's or AWS's (awskms://HOST/)."""
        config = Config(region_name=self.region, **(options or {"retries": _AWS_RETRIES}))
        try:
            return self._boto3.client(  # type: ignore[call-overload]
                service, config=config, endpoint_url=endpoint_url
            )
        except ValueError as error:  # botocore's "Invalid endpoint: ..."
            raise ConfigError(
                f"cannot use the AWS endpoint: {error}",
                "set AWS_ENDPOINT_URL to a URL such as https://ecr.us-east-1.amazonaws.com, "
                "or unset it",
            ) from error
        except botocore.exceptions.BotoCoreError as error:
            raise explain_aws_error(error, "setting up the AWS clients") from error

    def caller(self) -> CallerIdentity:
        """Who the credentials are, from STS (GetCallerIdentity needs no permission)."""
        sts: STSClient = self.client("sts")

        def ask() -> CallerIdentity:
            answer = sts.get_caller_identity()
            return CallerIdentity(account=str(answer["Account"]), arn=str(answer["Arn"]))

        return call_aws("asking STS who the caller is", ask)

    def signing_credentials(self) -> tuple[str | None, str | None]:
        """The access key id boto3 signs with, and the profile's mfa_serial if it has one."""
        credentials = self._boto3.get_credentials()
        access_key = None if credentials is None else credentials.access_key
        try:
            serial = self._botocore.get_scoped_config().get("mfa_serial")
        except botocore.exceptions.BotoCoreError:
            # A profile that cannot be read has no MFA device that we know of.
            serial = None
        return access_key, (str(serial) if serial else None)
