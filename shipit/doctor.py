"""`shipit doctor`: what is missing before a ship can work, one check per prerequisite.

Every check is a plain function that returns a Check and never raises a ShipitError: a
failure is an outcome to report next to the others, not a reason to stop looking. A check
that depends on an earlier one that failed says so as a warning instead of failing twice.
Secrets are looked up, never shown: details name where credentials come from and the user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shipit.config import LOCAL_BASE_IMAGE, Settings
from shipit.errors import DoctorError, EngineError, ShipitError

if TYPE_CHECKING:
    from shipit.engine import Engine
    from shipit.registries.dockerhub import Credentials
    from shipit.registries.ecr import CallerIdentity

Outcome = Literal["ok", "warn", "fail"]
Progress = Callable[[str], None]

# STS answers the same caller in any region; without a configured one this lets the
# credentials be checked on their own (the region gets its own failing check).
STS_FALLBACK_REGION = "us-east-1"


def _quiet(_: str) -> None:
    return None


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
        facts = engine.facts()
    except ShipitError as error:
        return Check.failed("engine", error), None
    return Check(
        "engine",
        "ok",
        f"Docker engine {facts.version} answers at {engine.address.describe()}; "
        f"image store: {facts.image_store}",
    ), engine


def check_published_ports(settings: Settings, engine: Engine | None) -> Check:
    """Where `shipit run` publishes the site and where this machine reaches it."""
    from shipit.pipeline import container_name, publish_host, reach_host

    name = "published_ports"
    if engine is None:
        return _not_checked(name, "no Docker engine")
    published_on = publish_host(settings, engine)
    url = f"http://{reach_host(settings, engine, published_on)}:{settings.port}"
    where = "the engine's machine" if engine.address.is_remote else "this machine"
    detail = f"run publishes on {published_on}:{settings.port} of {where}, reached at {url}"
    try:
        owner = engine.container_publishing(published_on, settings.port)
    except ShipitError as error:
        return Check.failed(name, error)
    if owner is not None and owner != container_name(settings):
        return Check(
            name,
            "warn",
            f"{detail}; port {settings.port} is in use by container {owner}",
            "stop that container or choose another port with --port",
        )
    return Check(name, "ok", detail)


def check_base_image(settings: Settings, engine: Engine | None, progress: Progress) -> Check:
    name = "base_image"
    wanted = settings.base_image
    if engine is None:
        return _not_checked(name, "no Docker engine")
    try:
        present = engine.image(wanted)
        if present is not None:
            return Check(name, "ok", f"{wanted} is present ({present.id[:19]})")
        progress(f"doctor: base image {wanted} is not here; trying to pull it")
        try:
            engine.pull(wanted, progress)
        except EngineError as error:
            # `shipit build` falls back to the local base when the default cannot be pulled.
            if settings.origins.get("base_image") == "default" and engine.image(LOCAL_BASE_IMAGE):
                return Check(
                    name,
                    "warn",
                    f"{wanted} cannot be pulled ({error.message}); builds use the local "
                    f"{LOCAL_BASE_IMAGE} instead",
                )
            return Check(
                name,
                "fail",
                f"{wanted} is not present and cannot be pulled ({error.message})",
                f"use a local base image: --base-image {LOCAL_BASE_IMAGE} "
                "(scripts/testenv.sh builds it)",
            )
    except ShipitError as error:
        return Check.failed(name, error)
    return Check(name, "ok", f"{wanted} was pulled")


def check_templates(settings: Settings) -> Check:
    from shipit.render import render_site

    try:
        site = render_site(settings.project_dir, settings.base_image)
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
            f"all {len(simulation.decisions)} push actions allowed for {simulation.principal}",
        )
    refused = ", ".join(f"{d.action} ({d.decision})" for d in simulation.refused)
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
    settings: Settings, engine: Engine | None, environ: Mapping[str, str]
) -> tuple[Check, Credentials | None]:
    from shipit.registries.dockerhub import credentials

    def no_store(_: str) -> tuple[str, str] | None:
        return None

    stored = engine.stored_credentials if engine is not None else no_store
    try:
        found = credentials(settings.dockerhub_registry, environ, stored)
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
    to: str = "all",
    online: bool = False,
    environ: Mapping[str, str] | None = None,
    progress: Progress = _quiet,
) -> DoctorReport:
    """Every check for the registries in `to` ("ecr", "dockerhub" or "all")."""
    environ = os.environ if environ is None else environ
    engine_check, engine = check_engine(settings.engine_timeout)
    checks = [
        engine_check,
        check_published_ports(settings, engine),
        check_base_image(settings, engine, progress),
        check_templates(settings),
    ]
    if to in ("ecr", "all"):
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
    if to in ("dockerhub", "all"):
        hub_check, found = dockerhub_credentials_of(settings, engine, environ)
        checks += [check_dockerhub_repository(settings), hub_check]
        if online:
            progress(f"doctor: logging in to {settings.dockerhub_registry}")
            checks.append(check_dockerhub_login(settings, found))
    return DoctorReport(tuple(checks))
