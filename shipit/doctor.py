"""`shipit doctor`: what is missing before a ship can work, one check per prerequisite.

Every check is a plain function that returns a Check and never raises a ShipitError: a
failure is an outcome to report next to the others, not a reason to stop looking. A check
that depends on an earlier one that failed says so as a warning instead of failing twice.
Secrets are looked up, never shown: details name where credentials come from and the user.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipit.checks import Check, Probe
from shipit.config import Settings
from shipit.errors import DoctorError, ShipitError
from shipit.progress import Progress, quiet

if TYPE_CHECKING:
    from shipit.aws import CallerIdentity
    from shipit.engine import Engine
    from shipit.registries.catalog import RegistrySpec

__all__ = ["Check", "DoctorReport", "check_iam_simulation", "diagnose"]


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


def check_push_uploads(settings: Settings, engine: Engine | None) -> Check:
    """Who compresses and uploads the layers of a push: shipit or the engine."""
    from shipit.push.blobs import engine_push_reason

    name = "push_uploads"
    if engine is None:
        return Check.not_checked(name, "no Docker engine")
    try:
        reason = engine_push_reason(settings.uploader, engine)
        store = engine.image_store()
    except ShipitError as error:
        return Check.failed(name, error)
    if reason is None and store != "classic":
        return Check(
            name,
            "ok",
            "the engine pushes: an image docker build made; shipit uploads an image it wrote "
            "itself (on the containerd image store, from a base pulled from a registry by "
            "digest), verifying the digest the classic image store gives",
        )
    if reason is None:
        return Check(
            name,
            "ok",
            "shipit compresses each new layer once, on every core, and uploads it to every "
            "registry itself (a local engine with the classic image store)",
        )
    return Check(name, "ok", f"the engine pushes: {reason}")


def check_published_ports(settings: Settings, engine: Engine | None) -> Check:
    """Where `shipit run` publishes the site and where this machine reaches it."""
    from shipit.pipeline import container_name
    from shipit.site_address import publish_host, reach_host

    name = "published_ports"
    if engine is None:
        return Check.not_checked(name, "no Docker engine")
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


def check_base_image(
    settings: Settings, engine: Engine | None, progress: Progress
) -> tuple[Check, str]:
    """The check, and the base image reference a build would use (the configured one when
    that cannot be told)."""
    from shipit.base_image import resolve_base_image

    name = "base_image"
    if engine is None:
        return Check.not_checked(name, "no Docker engine"), settings.base_image
    try:
        base = resolve_base_image(settings, engine, progress)
    except ShipitError as error:
        return Check.failed(name, error), settings.base_image
    if base.how == "fallback":
        return Check(name, "warn", f"builds use {base.reference}: {base.note}"), base.reference
    return Check(name, "ok", f"{base.reference} is {base.how} ({base.image_id[:19]})"), (
        base.reference
    )


# QEMU's names for the architectures docker names otherwise, as binfmt_misc lists them.
_QEMU_NAMES = {"arm64": "aarch64", "amd64": "x86_64", "386": "i386", "arm": "arm"}
BINFMT = "/proc/sys/fs/binfmt_misc"


def has_emulator(architecture: str, binfmt: str = BINFMT) -> bool:
    """Whether binfmt_misc has an enabled handler for `architecture` (qemu-user-static's and
    tonistiigi/binfmt's are named qemu-<its QEMU name>)."""
    name = _QEMU_NAMES.get(architecture, architecture)
    try:
        with open(os.path.join(binfmt, f"qemu-{name}"), encoding="utf-8") as handler:
            return handler.readline().strip() == "enabled"
    except OSError:
        return False


def check_platforms(settings: Settings, engine: Engine | None) -> Check:
    """The platforms a ship builds: the base image offers each, the engine can push several,
    and the engine's machine can run each one's smoke test."""
    from shipit.base_image import platforms_to_build
    from shipit.errors import no_emulator
    from shipit.push.blobs import engine_push_reason

    name = "platforms"
    if not settings.platforms.names:
        return Check(name, "ok", "the engine's own platform")
    if engine is None:
        return Check.not_checked(name, "no Docker engine")
    try:
        chosen = platforms_to_build(settings, engine)
    except ShipitError as error:
        return Check.failed(name, error)
    if chosen is None:
        return Check(name, "ok", "the engine's own platform")
    listed = ", ".join(str(platform) for platform in chosen)
    reason = engine_push_reason(settings.uploader, engine) if len(chosen) > 1 else None
    if reason is not None:
        return Check(
            name,
            "fail",
            f"{listed} make an index, which shipit uploads itself, and here the engine pushes "
            f"({reason})",
            'ship one platform at a time, or from a local engine with uploader = "auto"',
        )
    native = engine.platform()
    foreign = [platform for platform in chosen if not platform.matches(native)]
    if foreign and engine.address.is_remote:
        return Check(name, "warn", f"{listed}; emulation not checked on a remote engine")
    missing = [platform for platform in foreign if not has_emulator(platform.architecture)]
    if missing:
        return Check.failed(name, no_emulator(missing[0].architecture))
    emulated = f" ({', '.join(str(p) for p in foreign)} under emulation)" if foreign else ""
    return Check(name, "ok", f"{listed} from {settings.base_image}{emulated}")


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


# The AWS side: each registry checks its own (registries/ecr_registry.py); IAM answers here.


def check_iam_simulation(settings: Settings, identity: CallerIdentity | None) -> Check:
    """IAM's own verdict on the push's actions for the caller (iam:SimulatePrincipalPolicy).

    A simulation that cannot run (the API is missing, as in moto_server, or the caller may
    not simulate) is a warning: it says nothing about whether the push would work.
    """
    from shipit.aws import AwsSession
    from shipit.iam.actions import required_access
    from shipit.iam.identity import simulate

    name = "iam_permissions"
    if identity is None:
        return Check.not_checked(name, "no working AWS credentials")
    if not settings.aws_region:
        return Check.not_checked(name, "no AWS region")
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
        simulation = simulate(AwsSession(settings.aws_region), identity.arn, accesses)
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


def check_signing_key(settings: Settings, environ: Mapping[str, str]) -> Check:
    """The signing key can be read and signs: a test message signed and verified (a KMS key
    signs one when loaded). Neither the key nor its passphrase is shown."""
    from shipit.signing.ecdsa import key_id, verifies
    from shipit.signing.image_signing import load_settings_signer

    try:
        signer = load_settings_signer(settings, environ)
        message = b"shipit doctor: a test message"
        if not verifies(signer.public_key, signer.sign(message), message):
            return Check(
                "signing key",
                "fail",
                f"{signer.description} made a signature its public key rejects",
                "use another key",
            )
    except ShipitError as error:
        return Check.failed("signing key", error)
    return Check(
        "signing key", "ok", f"{signer.description} signs (key {key_id(signer.public_key)[:19]})"
    )


def diagnose(
    settings: Settings,
    *,
    to: tuple[RegistrySpec, ...] | None = None,
    online: bool = False,
    environ: Mapping[str, str] | None = None,
    progress: Progress = quiet,
) -> DoctorReport:
    """Every check for the engine, the templates and the registries in `to` (default: every
    one with a repository set; none is a failed check)."""
    from shipit.registries.catalog import nothing_to_push_to, registry_of, select_registries

    environ = os.environ if environ is None else environ
    # The key first: with it set, no push works without it.
    checks = [check_signing_key(settings, environ)] if settings.signing_key else []
    engine_check, engine = check_engine(settings.engine_timeout)
    base_check, base_image = check_base_image(settings, engine, progress)
    checks += [
        engine_check,
        check_published_ports(settings, engine),
        check_push_uploads(settings, engine),
        base_check,
        check_platforms(settings, engine),
        check_templates(settings, base_image),
    ]
    if to is None:
        to = select_registries(settings, allow_none=True)
    if not to:
        checks.append(Check.failed("registries", nothing_to_push_to()))
    probe = Probe(
        environ,
        engine_rules=None if engine is None else engine.registry_rules,
        online=online,
        progress=progress,
        iam_verdict=functools.partial(check_iam_simulation, settings),
    )
    for spec in to:
        checks += registry_of(spec, settings).doctor_checks(probe)
    return DoctorReport(tuple(checks))
