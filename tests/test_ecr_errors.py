"""AWS endpoints that do not answer like AWS: each is one AWS error with a hint, never a crash.

A loopback server stands where AWS_ENDPOINT_URL points and answers every call the way its
`answer` says: what a captive portal, a wrong endpoint or a broken proxy would send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import botocore.exceptions
import pytest

from harness.loopback import HttpService
from harness.services import AWS_ENV_CLEARED, aws_env
from shipit.aws import AwsSession, explain_aws_error
from shipit.errors import AuthError, AwsError, ConfigError, ExitCode, ShipitError
from shipit.registries.ecr import Ecr
from tests.conftest import Project

REGION = "us-east-1"


class NotAws(HttpService):
    """Answers every request with `status` and `body`, or closes the connection (`cut`)."""

    def __init__(self, status: int = 200, body: bytes = b"", *, cut: bool = False) -> None:
        super().__init__(name="not-aws")
        self.status = status
        self.body = body
        self.cut = cut

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if self.cut:
            request.close_connection = True
            return
        request.send_response(self.status)
        request.send_header("Content-Type", "text/html")
        request.send_header("Content-Length", str(len(self.body)))
        request.end_headers()
        request.wfile.write(self.body)


ANSWERS: dict[str, Callable[[], NotAws]] = {
    "HTML page": lambda: NotAws(200, b"<html><body>Sign in to the Wi-Fi</body></html>"),
    "broken JSON": lambda: NotAws(200, b'{"authorizationData": [{"authorizationToken": '),
    "plain text": lambda: NotAws(200, b"garbage"),
    "empty JSON object": lambda: NotAws(200, b"{}"),
    "403 without an AWS error": lambda: NotAws(403, b""),
    "connection closed": lambda: NotAws(cut=True),
}

AWS_CALLS: dict[str, Callable[[AwsSession], Any]] = {
    "caller": lambda aws: aws.caller(),
    "token": lambda aws: Ecr(aws).token(),
    "repository": lambda aws: Ecr(aws).repository("site"),
    "create repository": lambda aws: Ecr(aws).create_repository("site", "MUTABLE", True),
}


@pytest.fixture(params=list(ANSWERS))
def not_aws(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotAws]:
    for name in AWS_ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    with ANSWERS[request.param]() as server:
        for name, value in aws_env(server.url, REGION).items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.mark.parametrize("call", AWS_CALLS)
def test_an_answer_that_is_not_from_aws_is_an_aws_error(not_aws: NotAws, call: str) -> None:
    with pytest.raises(AwsError) as caught:
        AWS_CALLS[call](AwsSession(REGION))
    error = caught.value
    assert error.exit_code == ExitCode.AWS
    assert error.hint, error.message
    assert "AWS_ENDPOINT_URL" in error.hint
    assert "\n" not in error.one_line()


ENDPOINT = "https://ecr.us-east-1.amazonaws.com"


EXPLAINED: list[tuple[Exception, type[ShipitError], str]] = [
    (botocore.exceptions.ReadTimeoutError(endpoint_url=ENDPOINT), AwsError, "did not answer"),
    (botocore.exceptions.ConnectTimeoutError(endpoint_url=ENDPOINT), AwsError, "reach"),
    (botocore.exceptions.EndpointConnectionError(endpoint_url=ENDPOINT), AwsError, "reach"),
    (botocore.exceptions.ConnectionClosedError(endpoint_url=ENDPOINT), AwsError, "reach"),
    (botocore.exceptions.NoCredentialsError(), AuthError, "no AWS credentials"),
    (
        botocore.exceptions.PartialCredentialsError(provider="env", cred_var="secret"),
        AwsError,
        "Partial credentials",
    ),
    (botocore.exceptions.ProfileNotFound(profile="ci"), ConfigError, "profile (ci)"),
]


@pytest.mark.parametrize(
    ("error", "expected_class", "words"),
    [pytest.param(*case, id=type(case[0]).__name__) for case in EXPLAINED],
)
def test_botocore_errors_name_the_problem_and_what_to_do(
    error: Exception, expected_class: type[ShipitError], words: str
) -> None:
    explained = explain_aws_error(error, "getting an ECR authorization token")
    assert type(explained) is expected_class
    assert words in explained.message
    assert "getting an ECR authorization token" in explained.message
    assert explained.hint


def test_an_endpoint_that_is_not_a_url_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ecr.example")
    with pytest.raises(ConfigError) as caught:
        Ecr(AwsSession(REGION))
    assert "AWS_ENDPOINT_URL" in caught.value.hint


def test_the_command_line_reports_an_endpoint_that_is_not_aws(project: Project) -> None:
    with NotAws(200, b"<html><body>Sign in to the Wi-Fi</body></html>") as server:
        result = project.shipit("iam", "policy", env=project.env(**aws_env(server.url, REGION)))
    assert result.code == ExitCode.AWS, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "shipit: error: could not read the answer while asking STS who the caller is: it is not "
        "an AWS response; check AWS_ENDPOINT_URL and any HTTP(S) proxy between here and AWS, "
        "then run again"
    )
