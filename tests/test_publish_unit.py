"""Pure logic of publishing: how refusals are classified, bytes counted, failures combined."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.targets import StandInRegistry, target_of
from shipit.aws import CallerIdentity, root_refusal
from shipit.config import load_settings
from shipit.engine import ImageInfo
from shipit.errors import (
    AuthError,
    ExitCode,
    PushError,
    PushStreamError,
    RegistryUnreachableError,
    RepositoryMissingError,
    ShipitError,
    TagConflictError,
    TokenExpired,
)
from shipit.push.image import PushImage
from shipit.push.report import PushReport, TargetReport
from shipit.push.retry import auth_refusal, is_retryable, with_retries
from shipit.push.steps import is_tag_conflict, uploaded_bytes
from shipit.push.targets import Target
from shipit.push_stream import classify_stream_error
from shipit.registries.catalog import configured_registries, registry_of
from shipit.registries.credentials import Credentials
from shipit.registries.errors import RegistryAuthError, RegistryResponseError
from shipit.registries.manifest import Manifest
from shipit.tags import PlannedTag, TagPlan

REFERENCE = "127.0.0.1:5000/site:abc"


def push_image(info: ImageInfo) -> PushImage:
    """The PushImage of `info` under the default tags, without a project to plan them from."""
    plan = TagPlan((PlannedTag("abc", "{sha}", False), PlannedTag("latest", "latest", True)), ())
    return PushImage(
        id=info.id,
        build_id=info.labels.get("io.shipit.build-id", ""),
        labels=dict(info.labels),
        layers=info.layers,
        tags=plan,
    )


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
        (
            "name unknown: The repository with name 'site' does not exist",
            RepositoryMissingError,
            False,
        ),
        ("manifest invalid: something odd", PushStreamError, False),
    ],
)
def test_stream_errors_are_classified(
    stream_error: str, expected_class: type[ShipitError], retryable: bool
) -> None:
    error = classify_stream_error(stream_error, REFERENCE, "check the token")
    assert type(error) is expected_class
    assert is_retryable(error) is retryable
    assert REFERENCE in error.message


def test_uploaded_bytes_count_only_the_layers_this_push_sent() -> None:
    image = push_image(
        ImageInfo(
            id="sha256:c0ffee",
            tags=(),
            labels={},
            repo_digests=(),
            size=0,
            layers=("sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64),
        )
    )
    manifest = Manifest(
        digest="sha256:m",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        content={
            "layers": [
                {"size": 1000, "digest": "sha256:" + "d" * 64},
                {"size": 20, "digest": "sha256:" + "e" * 64},
                {"size": 3, "digest": "sha256:" + "f" * 64},
            ]
        },
    )
    # The classic store's stream names layers by diff id, the containerd store's by blob.
    assert uploaded_bytes(manifest, image, {"b" * 12, "c" * 12}) == 23
    assert uploaded_bytes(manifest, image, {"d" * 12}) == 1000
    assert uploaded_bytes(manifest, image, set()) == 0


def test_served_image_is_recognised_on_either_image_store() -> None:
    image = push_image(
        ImageInfo(id="sha256:" + "1" * 64, tags=(), labels={}, repo_digests=(), size=0)
    )

    def manifest(digest: str, config: str) -> Manifest:
        return Manifest(digest=digest, media_type="", content={"config": {"digest": config}})

    assert image.is_served_by(manifest("sha256:" + "9" * 64, image.id))  # classic: config
    assert image.is_served_by(manifest(image.id, "sha256:" + "8" * 64))  # containerd
    assert not image.is_served_by(manifest("sha256:" + "9" * 64, "sha256:" + "8" * 64))


def test_same_build_needs_every_input_label_equal() -> None:
    labels = {
        "io.shipit.build-id": "b1",
        "io.shipit.base-image-id": "sha256:base",
        "org.opencontainers.image.revision": "abc",
    }
    image = push_image(ImageInfo(id="sha256:x", tags=(), labels=labels, repo_digests=(), size=0))
    assert image.same_build_as({"config": {"Labels": dict(labels)}})
    for key in labels:
        assert not image.same_build_as({"config": {"Labels": {**labels, key: "other"}}})
    assert not image.same_build_as({"config": {}})
    assert not image.same_build_as({})
    unlabelled = push_image(ImageInfo(id="sha256:y", tags=(), labels={}, repo_digests=(), size=0))
    assert not unlabelled.same_build_as({"config": {"Labels": {}}})


def _report(*errors: ShipitError | None) -> PushReport:
    targets = []
    for name, error in zip(("ecr", "dockerhub"), errors, strict=False):
        status = "pushed" if error is None else "failed"
        targets.append(TargetReport(name=name, reference=name, status=status, error=error))
    return PushReport(
        image_id="sha256:x", build_id="b", tags=("t", "latest"), dry_run=False, targets=targets
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
    error = classify_stream_error("manifest invalid at 127.0.0.1:5003", REFERENCE, "")
    assert is_retryable(error) is False
    assert is_retryable(classify_stream_error("unexpected status 504", REFERENCE, "")) is True


# -- moving `latest`: refusals and retries ------------------------------------------------

ECR_IMMUTABLE = (
    "The image tag 'latest' already exists in the 'site' repository and cannot be "
    "overwritten because the tag is immutable."
)


@pytest.mark.parametrize(
    ("status", "code", "words", "conflict"),
    [
        (400, "TAG_INVALID", ECR_IMMUTABLE, True),
        (409, "TAG_IMMUTABLE", "tag is immutable", True),
        (409, "", "", True),
        (400, "TAG_INVALID", "invalid tag", False),
        (400, "MANIFEST_INVALID", "manifest invalid", False),
        (400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", False),
        (404, "NAME_UNKNOWN", "repository name not known to registry", False),
    ],
)
def test_tag_conflicts_are_told_from_other_refusals(
    status: int, code: str, words: str, conflict: bool
) -> None:
    error = RegistryResponseError(
        f"registry r answered {status}", status=status, code=code, registry_message=words
    )
    assert is_tag_conflict(error) is conflict
    assert is_retryable(error) is False


def _target(registry: StandInRegistry | None = None) -> Target:
    return target_of(registry or StandInRegistry(), login=Credentials("AWS", "first-token"))


def _refused(status: int, words: str) -> RegistryAuthError:
    return RegistryAuthError(
        f"registry 127.0.0.1:5000 denied access to user 'AWS' ({status})",
        "check the ECR permissions",
        status=status,
        registry_message=words,
    )


def test_registry_refusals_are_plain_auth_errors_naming_what_ecr_names() -> None:
    target = _target()
    expired = auth_refusal(
        _refused(403, "Your authorization token has expired. Reauthenticate and try again."),
        target,
    )
    assert type(expired) is TokenExpired
    denied = auth_refusal(
        _refused(
            403,
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
            "ecr:PutImage on resource: arn:aws:ecr:us-east-1:123456789012:repository/site",
        ),
        target,
    )
    assert type(denied) is AuthError
    assert "missing ecr:PutImage" in denied.message
    assert "shipit iam policy" in denied.hint
    plain = auth_refusal(_refused(401, "authentication required"), target)
    assert type(plain) is AuthError  # the report's error class stays "AuthError"
    assert plain.exit_code == ExitCode.AUTH


def test_an_expired_token_is_renewed_once_for_the_same_client() -> None:
    registry = StandInRegistry()
    target = _target(registry)
    calls: list[str] = []

    def step(on: Target) -> str:
        calls.append(on.login.password)
        if len(calls) == 1:
            raise _refused(403, "Your authorization token has expired.")
        return "done"

    tried = with_retries(target, 1, lambda _: None, step)
    assert (tried.result(), tried.attempts) == ("done", 1)
    assert calls == ["first-token", "token-2"]
    assert registry.calls == ["renewed"]
    # Renewed as a new value on the same client: no second client, no second challenge.
    assert tried.target.client is target.client
    assert tried.target.login.password == "token-2" and target.login.password == "first-token"

    def always_expired(_: Target) -> str:
        raise _refused(403, "Your authorization token has expired.")

    with pytest.raises(TokenExpired):
        with_retries(_target(), 3, lambda _: None, always_expired).result()
    cannot_renew = _target(StandInRegistry(renewable=False))
    assert isinstance(
        with_retries(cannot_renew, 3, lambda _: None, always_expired).error, TokenExpired
    )


def test_only_transient_faults_are_tried_again() -> None:
    answers = [
        RegistryResponseError("503", status=503),
        RegistryResponseError("400", status=400, code="MANIFEST_INVALID"),
    ]
    seen: list[int] = []

    def step(_: Target) -> str:
        seen.append(1)
        raise answers[len(seen) - 1]

    with pytest.raises(RegistryResponseError) as caught:
        with_retries(_target(), 4, lambda _: None, step).result()
    assert caught.value.status == 400
    assert len(seen) == 2  # the 503 once more, the 400 never


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("dockerhub", 'dockerhub_tag_mutability = "IMMUTABLE"'),
        ("ghcr", 'tag_mutability = "IMMUTABLE" in the [[registries]] entry name = "ghcr"'),
    ],
)
def test_the_immutable_tag_hint_names_a_setting_that_exists(
    tmp_path: Path, name: str, setting: str
) -> None:
    # What the hint says to write is a setting shipit takes.
    toml = 'dockerhub_repository = "acme/site"\n'
    if name == "dockerhub":
        toml += 'dockerhub_tag_mutability = "IMMUTABLE"\n'
    else:
        toml += f'[[registries]]\nname = "{name}"\nrepository = "ghcr.io/acme/site"\n'
        toml += 'tag_mutability = "IMMUTABLE"\n'
    (tmp_path / "shipit.toml").write_text(toml)
    settings = load_settings(tmp_path, environ={})
    [spec] = [spec for spec in configured_registries(settings) if spec.name == name]
    assert spec.tag_mutability == "IMMUTABLE"
    hint = registry_of(spec, settings).immutable_tag_hint()
    assert hint.startswith(f"set {setting} so shipit leaves moving tags alone")
