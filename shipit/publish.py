"""Publishing the smoke-tested image to ECR and Docker Hub, concurrently and verified.

Per registry: the engine pushes the git-sha tag; then, only once every registry holds the sha
tag, `latest` is pointed at the same manifest with one manifest PUT of the exact bytes the
registry serves under the sha tag (a second engine push would check every layer and upload the
manifest again). A tag that already holds this very image is skipped without uploading. Every
push stream is read to its end and any error line fails the push; the digest the stream
reports must be the one the registry serves, the served image config must be the local image,
and `latest` must answer that same digest. Each registry gets one API client for the whole
publish, so the auth challenge (and a Bearer token fetch) is paid once. Transient faults are
retried with bounded exponential backoff and jitter; refusals fail at once.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shipit.config import Settings
from shipit.engine import Engine, ImageInfo, LayerProgress
from shipit.errors import (
    AuthError,
    ConfigError,
    PreconditionError,
    PushError,
    RegistryUnreachableError,
    ShipitError,
    TagConflictError,
)
from shipit.iam.refusal import refused_action
from shipit.labels import LABEL_BUILD_ID, LABEL_VERSION
from shipit.registries.distribution import (
    Manifest,
    RegistryAuthError,
    RegistryClient,
    RegistryResponseError,
    is_transient,
)
from shipit.registries.dockerhub import credentials as dockerhub_credentials
from shipit.state import smoke_passed_image

TARGETS = ("ecr", "dockerhub")
LATEST = "latest"
Progress = Callable[[str], None]
# Bounds of the backoff between attempts; the total wait stays under ~15 s at 4 attempts.
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0


# An HTTP status worth retrying, as a whole number in the engine's message ("... status: 503").
_TRANSIENT_STATUS = re.compile(r"\b(?:408|429|5\d\d)\b")


class PushStreamError(PushError):
    """A refusal that came as a line in the engine's push stream."""

    def __init__(self, message: str, hint: str | None = None, *, transient: bool) -> None:
        super().__init__(message, hint)
        self.transient = transient


class TokenExpired(AuthError):
    pass


_EXPIRED_TOKEN_WORDS = ("token has expired", "expired token")
# How registries word a refused overwrite of an existing tag (ECR: 400 TAG_INVALID "... already
# exists ... cannot be overwritten because the tag is immutable"; others: 409 TAG_IMMUTABLE).
_TAG_CONFLICT_WORDS = ("immutable", "cannot be overwritten", "already exists")


def _classify_stream_error(text: str, reference: str, auth_hint: str) -> ShipitError:
    lowered = text.lower()
    if any(words in lowered for words in _EXPIRED_TOKEN_WORDS):
        return TokenExpired(f"push of {reference} was refused: the registry token has expired")
    if "immutable" in lowered or "cannot be overwritten" in lowered:
        return TagConflictError(f"push of {reference} was refused: {text}")
    if any(
        word in lowered
        for word in (
            "unauthorized",
            "authentication required",
            "denied",
            "forbidden",
            "not authorized",
        )
    ):
        # ECR answers a missing permission with AWS's own sentence naming the action.
        refusal = refused_action(text)
        if refusal is None:
            return AuthError(f"push of {reference} was refused: {text}", auth_hint)
        return AuthError(
            f"push of {reference} was refused ({refusal.describe()}): {text}", refusal.hint()
        )
    if any(word in lowered for word in ("connection refused", "no such host", "no route to host")):
        return RegistryUnreachableError(
            f"cannot reach the registry of {reference}: {text}",
            "check that the registry is up and its host name",
        )
    if any(
        word in lowered
        for word in (
            "timeout",
            "timed out",
            "reset by peer",
            "broken pipe",
            "eof",
            "toomanyrequests",
            "too many requests",
            "bad gateway",
            "service unavailable",
            "gateway timeout",
            "internal server error",
            "throttl",
        )
    ) or _TRANSIENT_STATUS.search(lowered):
        return PushStreamError(f"push of {reference} failed: {text}", transient=True)
    if "name unknown" in lowered or "not found" in lowered or "does not exist" in lowered:
        return PushError(
            f"push of {reference} was refused: {text}",
            "check the repository name; ECR repositories must exist (ecr_create_repository)",
        )
    return PushStreamError(f"push of {reference} failed: {text}", transient=False)


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, PushStreamError):
        return error.transient
    if isinstance(error, RegistryUnreachableError):
        return True
    return is_transient(error)


@dataclass
class Target:
    name: str
    registry: str
    repository: str
    auth: dict[str, str] = field(repr=False)
    mutability: str
    auth_hint: str
    notes: list[str] = field(default_factory=list)
    refresh_auth: Callable[[], dict[str, str]] | None = field(default=None, repr=False)
    # Creating a missing ECR repository waits for the first push: the target may be resolved
    # while the image is still being smoke-tested, and a failed test must change nothing.
    create_repository: Callable[[], str] | None = field(default=None, repr=False)

    _client: RegistryClient | None = field(default=None, init=False, repr=False)

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def client(self) -> RegistryClient:
        """The one API client of this registry for the whole publish: a new client would
        answer the auth challenge (and fetch a Bearer token) all over again."""
        if self._client is None:
            self._client = RegistryClient(
                self.registry,
                self.auth.get("username"),
                self.auth.get("password"),
                auth_hint=self.auth_hint,
            )
        return self._client

    def ensure_repository(self) -> None:
        if self.create_repository is not None:
            self.mutability = self.create_repository()
            self.create_repository = None
            self.notes.append(f"created ECR repository {self.repository}")

    def renew_auth(self) -> None:
        assert self.refresh_auth is not None
        self.auth = self.refresh_auth()
        if self._client is not None:
            self._client.use_credentials(self.auth.get("username"), self.auth.get("password"))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@dataclass
class TagOutcome:
    tag: str
    status: str  # pushed | unchanged | held-back | failed
    digest: str = ""
    bytes_uploaded: int = 0
    attempts: int = 0


@dataclass
class TargetReport:
    name: str
    reference: str
    status: str = "pending"  # pushed | unchanged | failed | planned
    digest: str = ""
    bytes_uploaded: int = 0
    seconds: float = 0.0
    tags: list[TagOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: ShipitError | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.name,
            "reference": self.reference,
            "status": self.status,
            "digest": self.digest,
            "bytes_uploaded": self.bytes_uploaded,
            "seconds": self.seconds,
            "tags": [vars(tag) for tag in self.tags],
            "notes": self.notes,
            "error": None
            if self.error is None
            else {
                "class": type(self.error).__name__,
                "exit_code": int(self.error.exit_code),
                "message": self.error.message,
                "hint": self.error.hint,
            },
        }


@dataclass
class PushReport:
    image_id: str
    build_id: str
    sha_tag: str
    dry_run: bool
    targets: list[TargetReport]

    @property
    def failed(self) -> list[TargetReport]:
        return [target for target in self.targets if target.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "image_id": self.image_id,
            "build_id": self.build_id,
            "tags": [self.sha_tag, LATEST],
            "dry_run": self.dry_run,
            "registries": [target.to_json() for target in self.targets],
        }

    def failure(self) -> ShipitError | None:
        """One error for the exit code: the registries' own class when they agree."""
        errors = [target.error for target in self.failed if target.error is not None]
        if not errors:
            return None
        names = ", ".join(target.name for target in self.failed)
        codes = {error.exit_code for error in errors}
        first = errors[0]
        summary = f"push failed for {names}: {first.message}"
        if len(codes) == 1:
            # Same class (so the same exit code) without calling a subclass's __init__.
            combined = type(first).__new__(type(first))
            combined.__dict__.update(first.__dict__)
            combined.message = summary
            combined.args = (summary,)
            return combined
        return PushError(summary, "see the report above for each registry")


# Resolving where each registry is and how to log in


def _ecr_target(settings: Settings, *, dry_run: bool, allow_root: bool) -> Target:
    from shipit.registries.ecr import Ecr, root_refusal

    ecr = Ecr(settings.aws_region)
    identity = ecr.caller()
    if identity.is_root and not allow_root:
        raise root_refusal(identity)
    name = settings.ecr_repository_name
    notes = []
    repository = ecr.repository(name)
    mutability = settings.ecr_tag_mutability
    create: Callable[[], str] | None = None
    if repository is None:
        if not settings.ecr_create_repository:
            raise PushError(
                f"ECR repository {name} does not exist in {settings.aws_region}",
                "create it, or set ecr_create_repository = true",
            )
        if dry_run:
            notes.append(f"would create ECR repository {name} ({mutability}, scan on push)")
        else:

            def create() -> str:
                made = ecr.create_repository(name, mutability, settings.ecr_scan_on_push)
                return made.tag_mutability

    else:
        mutability = repository.tag_mutability
    token = ecr.token()
    registry = settings.ecr_registry or token.endpoint

    def refresh() -> dict[str, str]:
        return ecr.token().auth_config()

    return Target(
        name="ecr",
        registry=registry,
        repository=name,
        auth=token.auth_config(),
        mutability=mutability,
        auth_hint="check the AWS identity's ECR permissions (`shipit iam policy`)",
        notes=notes,
        refresh_auth=refresh,
        create_repository=create,
    )


def _resolve_target(
    name: str,
    settings: Settings,
    engine: Engine,
    environ: Mapping[str, str],
    *,
    dry_run: bool,
    allow_root: bool,
) -> Target:
    if name == "ecr":
        return _ecr_target(settings, dry_run=dry_run, allow_root=allow_root)
    return _dockerhub_target(settings, engine, environ)


class RegistryAccess:
    """The registries' credentials and targets, resolved in the background.

    `shipit ship` starts this before it builds, so that importing boto3, asking STS who the
    caller is, looking up the ECR repository and fetching its token overlap the build and
    the smoke test instead of following them. Only reads happen here; a missing repository
    is created by the push. A failure is kept and raised when the push asks for the target.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        to: str,
        *,
        allow_root: bool,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        names = TARGETS if to == "all" else (to,)
        environ = os.environ if environ is None else environ
        self._pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="resolve")
        self._futures = {
            name: self._pool.submit(
                _resolve_target,
                name,
                settings,
                engine,
                environ,
                dry_run=False,
                allow_root=allow_root,
            )
            for name in names
        }

    def target(self, name: str) -> Target:
        return self._futures[name].result()

    def close(self) -> None:
        """Stops waiting for resolutions nobody needs any more (a failed build or smoke)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _dockerhub_target(settings: Settings, engine: Engine, environ: Mapping[str, str]) -> Target:
    if not settings.dockerhub_repository:
        raise ConfigError(
            "no Docker Hub repository is set",
            "set SHIPIT_DOCKERHUB_REPOSITORY (namespace/name) or push with --to ecr",
        )
    found = dockerhub_credentials(settings.dockerhub_registry, environ, engine.stored_credentials)
    registry = settings.dockerhub_registry
    return Target(
        name="dockerhub",
        registry=registry,
        repository=settings.dockerhub_repository,
        auth=found.auth_config(),
        mutability=settings.dockerhub_tag_mutability,
        auth_hint="check DOCKERHUB_USERNAME and DOCKERHUB_TOKEN (an access token with write scope)",
        notes=[f"credentials from {found.source}"],
    )


# Pushing the sha tag to one registry


def _served(client: RegistryClient, repository: str, tag: str) -> Manifest | None:
    try:
        return client.get_manifest(repository, tag)
    except RegistryResponseError as error:
        if error.status == 404:
            return None
        raise


def _uploaded_bytes(manifest: Manifest, image: ImageInfo, pushed_layers: set[str]) -> int:
    """Compressed bytes of the layers this push uploaded. The stream names layers by short
    diff id; the manifest lists their compressed sizes in the same order as the diff ids."""
    layers = manifest.content.get("layers") or []
    return sum(
        int(layer.get("size", 0))
        for layer, diff_id in zip(layers, image.layers, strict=False)
        if diff_id.removeprefix("sha256:")[:12] in pushed_layers
    )


def _credentials_work(client: RegistryClient) -> bool:
    try:
        client.ping()
    except ShipitError:
        return False
    return True


def _push_sha_once(
    engine: Engine,
    target: Target,
    image: ImageInfo,
    tag: str,
    progress: Progress,
    layer_progress: LayerProgress | None = None,
) -> tuple[TagOutcome, Manifest]:
    """The sha tag's outcome, and the manifest the registry now serves under it (with its
    exact bytes, which `latest` is then pointed at)."""
    reference = f"{target.reference}:{tag}"
    image_id = image.id
    client = target.client
    served = _served(client, target.repository, tag)
    if served is not None and served.config_digest == image_id:
        progress(f"{target.name}: {reference} already holds this image; nothing to upload")
        return TagOutcome(tag, "unchanged", digest=served.digest), served
    if served is not None and target.mutability == "IMMUTABLE":
        raise TagConflictError(
            f"{reference} already holds another image ({served.digest[:19]}) and the "
            "repository's tags are immutable"
        )
    progress(f"{target.name}: pushing {reference}")
    engine.tag(image_id, target.reference, tag)
    try:
        stream = engine.push(
            target.reference,
            tag,
            target.auth,
            lambda line: progress(f"{target.name}: {line}"),
            None
            if layer_progress is None
            else lambda layer, *state: layer_progress(f"{target.name} {layer}", *state),
        )
    finally:
        # The registry-named tag only exists for the push: nothing is left behind.
        engine.untag(reference)
    if stream.error:
        refusal = _classify_stream_error(stream.error, reference, target.auth_hint)
        if type(refusal) is AuthError and _credentials_work(client):
            # The engine drops the credentials when its own /v2/ ping fails (a 503, a
            # reset) and then reports "unauthorized": a fault, not a wrong token.
            raise PushStreamError(
                f"push of {reference} failed after a registry fault: {stream.error}",
                transient=True,
            ) from refusal
        raise refusal
    if not stream.digest:
        raise PushStreamError(f"push of {reference} ended without a digest", transient=True)
    served = _served(client, target.repository, tag)
    if served is None or served.digest != stream.digest:
        raise PushError(
            f"{reference}: the registry serves {served.digest if served else 'nothing'}, "
            f"but the push reported {stream.digest}",
            "something else wrote the tag meanwhile; push again",
        )
    if served.config_digest != image_id:
        raise PushError(
            f"{reference}: the registry's image config {served.config_digest} "
            f"is not the local image {image_id}",
            "push again; if it persists the registry rewrote the manifest",
        )
    uploaded = _uploaded_bytes(served, image, stream.pushed_layers)
    return TagOutcome(tag, "pushed", digest=stream.digest, bytes_uploaded=uploaded), served


# Pointing `latest` at the sha tag's manifest


def _is_tag_conflict(error: RegistryResponseError) -> bool:
    if error.status == 409 or error.code == "TAG_IMMUTABLE":
        return True
    lowered = error.registry_message.lower()
    return error.status == 400 and any(words in lowered for words in _TAG_CONFLICT_WORDS)


def _immutable_latest_hint(target: Target) -> str:
    if target.name == "ecr":
        # shipit reads ECR's own mutability setting, so only the repository can change.
        return "make the repository's tags mutable (`aws ecr put-image-tag-mutability`)"
    return (
        f'set {target.name}_tag_mutability = "IMMUTABLE" so shipit leaves latest alone, '
        "or make the repository's tags mutable"
    )


def _move_latest_once(target: Target, sha_manifest: Manifest, progress: Progress) -> TagOutcome:
    """One manifest PUT of the sha tag's exact bytes to `latest`, or none when `latest`
    already serves that digest. A status of "held-back" means the repository's tags are
    immutable and `latest` holds another image."""
    reference = f"{target.reference}:{LATEST}"
    digest = sha_manifest.digest
    client = target.client
    # A GET, not a HEAD: a refusal's body says why (an expired token, the IAM action).
    served = _served(client, target.repository, LATEST)
    if served is not None and served.digest == digest:
        progress(f"{target.name}: {reference} already holds this image")
        return TagOutcome(LATEST, "unchanged", digest=digest)
    if served is not None and target.mutability == "IMMUTABLE":
        return TagOutcome(LATEST, "held-back")
    if sha_manifest.raw_digest != digest:
        raise PushError(
            f"{target.reference}: the manifest served for the sha tag hashes to "
            f"{sha_manifest.raw_digest}, not to its digest {digest}",
            "push again; if it persists the registry rewrites manifests",
        )
    progress(f"{target.name}: pointing {reference} at {digest[:19]}")
    try:
        answered = client.put_manifest(target.repository, LATEST, sha_manifest)
    except RegistryResponseError as error:
        if _is_tag_conflict(error):
            raise TagConflictError(
                f"{reference} cannot be moved: {error.registry_message or error.message}",
                _immutable_latest_hint(target),
            ) from error
        raise
    if not answered:
        # Docker-Content-Digest is optional for a PUT in the OCI spec: ask what `latest` is.
        answered = client.manifest_digest(target.repository, LATEST) or ""
    if answered != digest:
        raise PushError(
            f"{reference}: the registry stored the manifest as {answered or 'no digest'}, "
            f"not as {digest}",
            "push again; if it persists the registry rewrites manifests",
        )
    return TagOutcome(LATEST, "pushed", digest=digest)


# Retries, and one token renewal


def _auth_refusal(error: RegistryAuthError, target: Target) -> AuthError:
    """A 401/403 of shipit's own registry requests, as the AuthError the report names (the
    client's subclass is an implementation detail), worded as the engine's refusals are."""
    words = error.registry_message
    if any(expired in words.lower() for expired in _EXPIRED_TOKEN_WORDS):
        return TokenExpired(f"{target.reference}: the registry token has expired ({words})")
    # ECR answers a missing permission with AWS's own sentence naming the action.
    refusal = refused_action(words)
    if refusal is None:
        return AuthError(error.message, error.hint)
    return AuthError(f"{error.message}: {refusal.describe()}", refusal.hint())


Outcome = TypeVar("Outcome")


def _with_retries(
    target: Target, attempts: int, progress: Progress, step: Callable[[], Outcome]
) -> tuple[Outcome, int]:
    """`step()`'s result and the attempt it took: transient faults retried with backoff, an
    expired token renewed once."""
    renewed = False

    def run_step() -> Outcome:
        try:
            return step()
        except RegistryAuthError as error:
            raise _auth_refusal(error, target) from error

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=RETRY_INITIAL_SECONDS, max=RETRY_MAX_SECONDS),
        retry=retry_if_exception(_is_retryable),
        reraise=True,
        before_sleep=lambda state: progress(
            f"{target.name}: attempt {state.attempt_number} failed "
            f"({state.outcome.exception() if state.outcome else ''}); retrying"
        ),
    )
    for attempt in retrying:
        with attempt:
            try:
                result = run_step()
            except TokenExpired:
                if renewed or target.refresh_auth is None:
                    raise
                renewed = True
                progress(f"{target.name}: token expired; fetching a fresh one")
                target.renew_auth()
                result = run_step()
            return result, attempt.retry_state.attempt_number
    raise AssertionError("unreachable: tenacity reraises the last error")


# The whole push


@dataclass
class _Publisher:
    settings: Settings
    engine: Engine
    environ: Mapping[str, str]
    image: ImageInfo
    sha_tag: str
    dry_run: bool
    allow_root: bool
    progress: Progress
    layer_progress: LayerProgress | None = None
    access: RegistryAccess | None = None
    resolved: list[Target] = field(default_factory=list)

    def _resolve(self, name: str) -> Target:
        if self.access is not None:
            target = self.access.target(name)
        else:
            target = _resolve_target(
                name,
                self.settings,
                self.engine,
                self.environ,
                dry_run=self.dry_run,
                allow_root=self.allow_root,
            )
        self.resolved.append(target)
        if not self.dry_run:
            target.ensure_repository()
        return target

    def push_sha(self, report: TargetReport) -> tuple[Target, Manifest] | None:
        """Resolves the registry and pushes the sha tag: the registry and the manifest it now
        serves under the sha tag, or None when nothing was pushed (a failure, a dry run)."""
        started = time.monotonic()
        try:
            target = self._resolve(report.name)
            report.reference = target.reference
            report.notes = list(target.notes)
            if self.dry_run:
                report.status = "planned"
                report.tags = [TagOutcome(self.sha_tag, "planned"), TagOutcome(LATEST, "planned")]
                return None
            (outcome, sha_manifest), attempts = _with_retries(
                target,
                self.settings.push_attempts,
                self.progress,
                lambda: _push_sha_once(
                    self.engine,
                    target,
                    self.image,
                    self.sha_tag,
                    self.progress,
                    self.layer_progress,
                ),
            )
            outcome.attempts = attempts
            report.tags.append(outcome)
            report.digest = outcome.digest
            report.bytes_uploaded += outcome.bytes_uploaded
            report.status = outcome.status
            return target, sha_manifest
        except ShipitError as error:
            report.status = "failed"
            report.error = error
            self.progress(f"{report.name}: failed: {error.one_line()}")
            return None
        finally:
            report.seconds = round(time.monotonic() - started, 3)

    def move_latest(self, report: TargetReport, tagged: tuple[Target, Manifest]) -> None:
        target, sha_manifest = tagged
        started = time.monotonic() - report.seconds
        try:
            outcome, attempts = _with_retries(
                target,
                self.settings.push_attempts,
                self.progress,
                lambda: _move_latest_once(target, sha_manifest, self.progress),
            )
            outcome.attempts = attempts
            report.tags.append(outcome)
            if outcome.status == "held-back":
                # An immutable repository cannot move `latest`; the sha tag is what counts.
                report.notes.append(
                    f"latest not moved: {target.reference}:{LATEST} already holds another "
                    "image and the repository's tags are immutable"
                )
            elif outcome.status == "pushed":
                report.status = "pushed"
        except ShipitError as error:
            report.tags.append(TagOutcome(LATEST, "failed"))
            report.status = "failed"
            report.error = error
            self.progress(f"{report.name}: failed: {error.one_line()}")
        finally:
            report.seconds = round(time.monotonic() - started, 3)

    def close(self) -> None:
        for target in self.resolved:
            target.close()


def _smoke_tested_image(settings: Settings, engine: Engine, skip_smoke: bool) -> ImageInfo:
    image = engine.image(f"{settings.image}:latest")
    if image is None:
        raise PreconditionError(
            f"no image {settings.image}:latest has been built here",
            "run `shipit ship` or `shipit build` first",
        )
    if not skip_smoke and smoke_passed_image(settings) != image.id:
        raise PreconditionError(
            f"image {image.id[7:19]} ({settings.image}:latest) has not passed a smoke test",
            "run `shipit run` to smoke-test it (or `shipit ship`), or pass --skip-smoke",
        )
    if not image.labels.get(LABEL_VERSION):
        raise PreconditionError(
            f"{settings.image}:latest was not built by shipit (no version label)",
            "build it with `shipit build`",
        )
    return image


def publish(
    settings: Settings,
    engine: Engine,
    to: str = "all",
    *,
    dry_run: bool = False,
    skip_smoke: bool = False,
    allow_root: bool = False,
    progress: Progress = lambda _: None,
    layer_progress: LayerProgress | None = None,
    environ: Mapping[str, str] | None = None,
    access: RegistryAccess | None = None,
) -> PushReport:
    """Pushes the smoke-tested image; `access`, when given, holds the targets already being
    resolved for the same `to` (see RegistryAccess)."""
    names = TARGETS if to == "all" else (to,)
    image = _smoke_tested_image(settings, engine, skip_smoke)
    publisher = _Publisher(
        settings=settings,
        engine=engine,
        environ=os.environ if environ is None else environ,
        image=image,
        sha_tag=image.labels[LABEL_VERSION],
        dry_run=dry_run,
        allow_root=allow_root,
        progress=progress,
        layer_progress=layer_progress,
        access=access,
    )
    report = PushReport(
        image_id=image.id,
        build_id=image.labels.get(LABEL_BUILD_ID, ""),
        sha_tag=publisher.sha_tag,
        dry_run=dry_run,
        targets=[TargetReport(name=name, reference="") for name in names],
    )
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="push")
    try:
        tagged = list(pool.map(publisher.push_sha, report.targets))
        if dry_run:
            pass
        elif any(registry is None for registry in tagged):
            # latest moves only once every registry holds the sha tag.
            for target_report, registry in zip(report.targets, tagged, strict=True):
                if registry is not None:
                    target_report.tags.append(TagOutcome(LATEST, "held-back"))
        else:
            moved = [registry for registry in tagged if registry is not None]
            list(pool.map(publisher.move_latest, report.targets, moved))
    except BaseException:
        # Ctrl-C: do not wait for pushes blocked in the engine; the caller cleans up and the
        # CLI ends the process, which closes their connections.
        pool.shutdown(wait=False, cancel_futures=True)
        # The push threads' own clean-up may never run: drop the registry-named tags here.
        for target_report in report.targets:
            if target_report.reference:
                engine.untag(f"{target_report.reference}:{publisher.sha_tag}")
        raise
    finally:
        publisher.close()
    pool.shutdown(wait=True)
    return report
