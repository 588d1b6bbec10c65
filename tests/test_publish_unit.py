"""Pure logic of publishing: how refusals are classified, bytes counted, failures combined."""

from __future__ import annotations

import pytest

from shipit.engine import ImageInfo
from shipit.errors import (
    AuthError,
    ExitCode,
    PushError,
    RegistryUnreachableError,
    ShipitError,
    TagConflictError,
)
from shipit.publish import (
    PushReport,
    PushStreamError,
    TargetReport,
    TokenExpired,
    _classify_stream_error,
    _is_retryable,
    _uploaded_bytes,
)
from shipit.registries.distribution import Manifest
from shipit.registries.ecr import CallerIdentity, root_refusal

REFERENCE = "127.0.0.1:5000/site:abc"


@pytest.mark.parametrize(
    ("stream_error", "expected_class", "retryable"),
    [
        (
            "denied: Your authorization token has expired. Reauthenticate and try again.",
            TokenExpired,
            False,
        ),
        (
            "tag invalid: The image tag 'abc' already exists in the 'site' repository and "
            "cannot be overwritten because the repository is immutable.",
            TagConflictError,
            False,
        ),
        ("unauthorized: authentication required", AuthError, False),
        ("unauthorized: incorrect username or password", AuthError, False),
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            RegistryUnreachableError,
            True,
        ),
        ("received unexpected HTTP status: 503 Service Unavailable", PushStreamError, True),
        ("received unexpected HTTP status: 502 Bad Gateway", PushStreamError, True),
        ("toomanyrequests: Rate exceeded", PushStreamError, True),
        (
            "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
            PushStreamError,
            True,
        ),
        ("net/http: request canceled (Client.Timeout exceeded)", PushStreamError, True),
        ("name unknown: The repository with name 'site' does not exist", PushError, False),
        ("manifest invalid: something odd", PushStreamError, False),
    ],
)
def test_stream_errors_are_classified(
    stream_error: str, expected_class: type[ShipitError], retryable: bool
) -> None:
    error = _classify_stream_error(stream_error, REFERENCE, "check the token")
    assert type(error) is expected_class
    assert _is_retryable(error) is retryable
    assert REFERENCE in error.message


def test_uploaded_bytes_count_only_the_layers_this_push_sent() -> None:
    image = ImageInfo(
        id="sha256:c0ffee",
        tags=(),
        labels={},
        repo_digests=(),
        size=0,
        layers=("sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64),
    )
    manifest = Manifest(
        digest="sha256:m",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        content={"layers": [{"size": 1000}, {"size": 20}, {"size": 3}]},
    )
    assert _uploaded_bytes(manifest, image, {"b" * 12, "c" * 12}) == 23
    assert _uploaded_bytes(manifest, image, set()) == 0


def _report(*errors: ShipitError | None) -> PushReport:
    targets = []
    for name, error in zip(("ecr", "dockerhub"), errors, strict=False):
        status = "pushed" if error is None else "failed"
        targets.append(TargetReport(name=name, reference=name, status=status, error=error))
    return PushReport(
        image_id="sha256:x", build_id="b", sha_tag="t", dry_run=False, targets=targets
    )


def test_one_failure_keeps_its_class_and_exit_code() -> None:
    down = RegistryUnreachableError("cannot reach registry h:1", "start it")
    failure = _report(None, down).failure()
    assert isinstance(failure, RegistryUnreachableError)
    assert failure.exit_code == ExitCode.REGISTRY_UNREACHABLE
    assert failure.message == "push failed for dockerhub: cannot reach registry h:1"
    assert failure.hint == "start it"


def test_different_failures_combine_into_a_push_error() -> None:
    failure = _report(AuthError("refused"), RegistryUnreachableError("down")).failure()
    assert type(failure) is PushError
    assert failure.exit_code == ExitCode.PUSH
    assert "ecr, dockerhub" in failure.message


def test_no_failure_is_none() -> None:
    assert _report(None, None).failure() is None


@pytest.mark.parametrize(
    ("arn", "is_root"),
    [
        ("arn:aws:iam::123456789012:root", True),
        ("arn:aws-cn:iam::123456789012:root", True),
        ("arn:aws-us-gov:iam::123456789012:root", True),
        ("arn:aws:iam::123456789012:user/root", False),
        ("arn:aws:sts::123456789012:assumed-role/ci/session", False),
        ("arn:aws:sts::123456789012:user/moto", False),
    ],
)
def test_root_user_is_recognised(arn: str, is_root: bool) -> None:
    assert CallerIdentity(account="123456789012", arn=arn).is_root is is_root


def test_root_refusal_explains_and_offers_the_override() -> None:
    error = root_refusal(
        CallerIdentity(account="123456789012", arn="arn:aws:iam::123456789012:root")
    )
    line = error.one_line()
    assert error.exit_code == ExitCode.AWS
    assert "root user of account 123456789012" in line
    assert "shipit iam policy" in line and "--allow-root" in line


def test_a_port_number_is_not_mistaken_for_a_server_error() -> None:
    error = _classify_stream_error("manifest invalid at 127.0.0.1:5003", REFERENCE, "")
    assert _is_retryable(error) is False
    assert _is_retryable(_classify_stream_error("unexpected status 504", REFERENCE, "")) is True
