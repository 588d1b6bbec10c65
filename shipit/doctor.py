"""`shipit doctor`: what is missing before a ship can work, one check per prerequisite.

Every check is a plain function that returns a Check and never raises a ShipitError: a
failure is an outcome to report next to the others, not a reason to stop looking. A check
that depends on an earlier one that failed says so as a warning instead of failing twice.
Secrets are looked up, never shown: details name where credentials come from and the user.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shipit.config import Settings
from shipit.errors import DoctorError, ShipitError
from shipit.progress import Progress, quiet

if TYPE_CHECKING:
    from shipit.engine import Engine
    from shipit.registries.dockerhub import Credentials
    from shipit.registries.ecr import CallerIdentity

Outcome = Literal["ok", "warn", "fail"]

# STS answers the same caller in any region; without a configured one this lets the
# credentials be checked on their own (the region gets its own failing check).
STS_FALLBACK_REGION = "us-east-1"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""

    @classmethod
    def failed(cls, name: str, error: ShipitError) -> Check:
        return cls(name, "fail", error.message, error.hint)

    def one_line(self) -> str:
        return f"{self.detail}; {self.hint}" if self.hint else self.detail

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "detail": self.detail,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if check.outcome == "fail")

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [check.to_json() for check in self.checks]}

    def failure(self) -> DoctorError | None:
        if self.ok:
            return None
        names = ", ".join(check.name for check in self.failed)
        return DoctorError(
            f"{len(self.failed)} of {len(self.checks)} checks failed: {names}",
            "fix what the table says for each and run `shipit doctor` again",
        )


def _not_checked(name: str, because: str) -> Check:
    return Check(name, "warn", f"not checked: {because}")


# The Docker side


def check_engine(timeout: float) -> tuple[Check, Engine | None]:
    from shipit.engine import Engine

    try:
        engine = Engine.connect(timeout)
        version = engine.version()
    except ShipitError as error:
        return Check.failed("engine", error), None
    return Check("engine", "ok", f"Docker engine {version} answers"), engine


def check_base_image(
    settings: Settings, engine: Engine | None, progress: Progress
) -> tuple[Check, str]:
    """The check, and the base image reference a build would use (the configured one when
    that cannot be told)."""
    from shipit.base_image import resolve_base_image

    name = "base_image"
    if engine is None:
        return _not_checked(name, "no Docker engine"), settings.base_image
    try:
        base = resolve_base_image(settings, engine, progress)
    except ShipitError as error:
        return Check.failed(name, error), settings.base_image
    if base.how == "fallback":
        return Check(name, "warn", f"builds use {base.reference}: {base.note}"), base.reference
    return Check(name, "ok", f"{base.reference} is {base.how} ({base.image_id[:19]})"), (
        base.reference
    )


def check_templates(settings: Settings, base_image: str) -> Check:
    from shipit.render import render_site

    try:
        site = render_site(settings.project_dir, base_image)
    except ShipitError as error:
        return Check.failed("templates", error)
    return Check(
        "templates",
        "ok",
        f"{len(site.pages)} pages and the Dockerfile render (build id {site.build_id})",
    )


# The AWS side


def check_region(settings: Settings) -> Check:
    if not settings.aws_region:
        return Check(
            "aws_region",
            "fail",
            "no AWS region is set",
            "set AWS_REGION, or aws_region in shipit.toml",
        )
    origin = settings.origins.get("aws_region", "")
    return Check("aws_region", "ok", f"{settings.aws_region} (from {origin})")


def judge_identity(identity: CallerIdentity) -> Check:
    """Any identity but the account's root user will do; the policy decides the rest."""
    from shipit.registries.ecr import root_refusal

    if identity.is_root:
        refusal = root_refusal(identity)
        return Check("aws_credentials", "fail", refusal.message, refusal.hint)
    return Check("aws_credentials", "ok", f"{identity.arn} (account {identity.account})")


def check_aws_credentials(settings: Settings) -> tuple[Check, CallerIdentity | None]:
    from shipit.registries.ecr import Ecr

    try:
        identity = Ecr(settings.aws_region or STS_FALLBACK_REGION).caller()
    except ShipitError as error:
        return Check.failed("aws_credentials", error), None
    return judge_identity(identity), identity


def check_ecr_repository(settings: Settings, identity: CallerIdentity | None) -> Check:
    from shipit.registries.ecr import Ecr

    name = "ecr_repository"
    if identity is None:
        return _not_checked(name, "no working AWS credentials")
    if not settings.aws_region:
        return _not_checked(name, "no AWS region")
    repository = settings.ecr_repository_name
    try:
        found = Ecr(settings.aws_region).repository(repository)
    except ShipitError as error:
        return Check.failed(name, error)
    if found is not None:
        return Check(name, "ok", f"{found.uri} exists (tags {found.tag_mutability})")
    if settings.ecr_create_repository:
        scan = "on" if settings.ecr_scan_on_push else "off"
        return Check(
            name,
            "ok",
            f"{repository} does not exist in {settings.aws_region} yet; the first push "
            f"creates it (tags {settings.ecr_tag_mutability}, scan on push {scan})",
        )
    return Check(
        name,
        "fail",
        f"ECR repository {repository} does not exist in {settings.aws_region}",
        "create it, or set ecr_create_repository = true",
    )


def check_iam_simulation(settings: Settings, identity: CallerIdentity | None) -> Check:
    """IAM's own verdict on the push's actions for the caller (iam:SimulatePrincipalPolicy).

    A simulation that cannot run (the API is missing, as in moto_server, or the caller may
    not simulate) is a warning: it says nothing about whether the push would work.
    """
    from shipit.iam.actions import required_access
    from shipit.iam.identity import simulate

    name = "iam_permissions"
    if identity is None:
        return _not_checked(name, "no working AWS credentials")
    if not settings.aws_region:
        return _not_checked(name, "no AWS region")
    try:
        accesses = required_access(
            settings.aws_region,
            identity.account,
            settings.ecr_repository_name,
            create_repository=settings.ecr_create_repository,
            describe_images=False,
        )
    except ShipitError as error:
        return Check.failed(name, error)
    try:
        simulation = simulate(settings.aws_region, identity.arn, accesses)
    except ShipitError as error:
        return Check(
            name,
            "warn",
            f"could not simulate ({error.message})",
            "check the attached policies offline with `shipit iam check --policy FILE`",
        )
    if not simulation.refused:
        return Check(
            name,
            "ok",
            f"all {len(simulation.decisions)} push actions allowed for {simulation.principal} "
            f"({simulation.context.describe()})",
        )
    refused = ", ".join(d.describe() for d in simulation.refused)
    return Check(
        name,
        "fail",
        f"{simulation.principal} may not: {refused}",
        "attach the policy printed by `shipit iam policy`",
    )


# The Docker Hub side


def check_dockerhub_repository(settings: Settings) -> Check:
    if not settings.dockerhub_repository:
        return Check(
            "dockerhub_repository",
            "fail",
            "no Docker Hub repository is set",
            "set SHIPIT_DOCKERHUB_REPOSITORY (namespace/name), or check only ECR with --to ecr",
        )
    return Check(
        "dockerhub_repository",
        "ok",
        f"{settings.dockerhub_repository} on {settings.dockerhub_registry}",
    )


def dockerhub_credentials_of(
    settings: Settings, environ: Mapping[str, str]
) -> tuple[Check, Credentials | None]:
    """The same lookup as the push's (shipit.registries.dockerhub.credentials)."""
    from shipit.registries.dockerhub import credentials

    try:
        found = credentials(settings.dockerhub_registry, environ)
    except ShipitError as error:
        return Check.failed("dockerhub_credentials", error), None
    check = Check(
        "dockerhub_credentials",
        "ok",
        f"user {found.username} for {settings.dockerhub_registry}, from {found.source}",
    )
    return check, found


def check_dockerhub_login(settings: Settings, found: Credentials | None) -> Check:
    """Logs in as a push would (the registry's token service, for Docker Hub), so a revoked
    or mistyped token shows up here rather than halfway through a ship."""
    if found is None:
        return _not_checked("dockerhub_login", "no Docker Hub credentials to log in with")
    from shipit.registries.distribution import RegistryClient

    client = RegistryClient(
        settings.dockerhub_registry,
        found.username,
        found.password,
        auth_hint="check DOCKERHUB_USERNAME and DOCKERHUB_TOKEN (an access token)",
    )
    try:
        with client:
            client.ping()
    except ShipitError as error:
        return Check.failed("dockerhub_login", error)
    return Check(
        "dockerhub_login", "ok", f"{found.username} logged in to {settings.dockerhub_registry}"
    )


def diagnose(
    settings: Settings,
    *,
    to: tuple[str, ...] = ("ecr", "dockerhub"),
    online: bool = False,
    environ: Mapping[str, str] | None = None,
    progress: Progress = quiet,
) -> DoctorReport:
    """Every check for the registries in `to` (as parse_destinations gives them)."""
    environ = os.environ if environ is None else environ
    engine_check, engine = check_engine(settings.engine_timeout)
    base_check, base_image = check_base_image(settings, engine, progress)
    checks = [engine_check, base_check, check_templates(settings, base_image)]
    if "ecr" in to:
        progress("doctor: asking AWS who the caller is")
        credentials_check, identity = check_aws_credentials(settings)
        checks += [
            check_region(settings),
            credentials_check,
            check_ecr_repository(settings, identity),
        ]
        if online:
            progress("doctor: simulating the push's IAM actions")
            checks.append(check_iam_simulation(settings, identity))
    if "dockerhub" in to:
        hub_check, found = dockerhub_credentials_of(settings, environ)
        checks += [check_dockerhub_repository(settings), hub_check]
        if online:
            progress(f"doctor: logging in to {settings.dockerhub_registry}")
            checks.append(check_dockerhub_login(settings, found))
    return DoctorReport(tuple(checks))
