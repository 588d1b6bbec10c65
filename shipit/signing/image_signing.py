"""The push's signing: the key the signing_key setting names, loaded (and so checked) before
anything is built or pushed, and what it signs and attests for each digest the push
uploads. The push calls `sign` after a manifest is in the registry by digest and before the
first tag names it (push/steps.py).

The attestations of one image are its smoke test's (signing/smoke_predicate.py) when it
passed here; `extra_attestations` is where the SBOM and provenance builders of
`shipit/attest/` plug in, as functions of the statement's subject and the image id.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipit.attest.statement import Attestation, Subject
from shipit.config import Settings
from shipit.progress import Progress, quiet
from shipit.signing.attach import Attached, attach
from shipit.signing.ecdsa import key_id
from shipit.signing.keys import Signer, load_signer
from shipit.signing.smoke_predicate import smoke_attestation
from shipit.state import smoke_checks_of, smoke_pass_of

if TYPE_CHECKING:
    from shipit.aws import AwsSession
    from shipit.engine import Engine
    from shipit.registries.registry import Target

AttestationBuilder = Callable[[Subject, str], Sequence[Attestation]]


def aws_session(region: str) -> AwsSession:
    from shipit.aws import AwsSession

    return AwsSession(region)


def load_settings_signer(settings: Settings, environ: Mapping[str, str] | None = None) -> Signer:
    """The signer of the signing_key setting (which must be set)."""
    return load_signer(
        settings.signing_key,
        os.environ if environ is None else environ,
        aws_session,
        project_dir=settings.project_dir,
        region=settings.aws_region,
    )


@dataclass
class ImageSigning:
    """Signs the digests of one push, in every registry, from the push's threads."""

    settings: Settings
    signer: Signer
    engine_platform: Callable[[], str]
    extra_attestations: tuple[AttestationBuilder, ...] = ()
    progress: Progress = quiet
    _attached: dict[str, list[Attached]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def key_id(self) -> str:
        return key_id(self.signer.public_key)

    def attestations(self, subject: Subject, image_id: str, platform: str) -> list[Attestation]:
        made: list[Attestation] = []
        passed = smoke_pass_of(self.settings, image_id)
        if passed is not None:
            checks = smoke_checks_of(self.settings, image_id)
            made.append(
                smoke_attestation([subject], passed, checks, platform or self.engine_platform())
            )
        for build in self.extra_attestations:
            made.extend(build(subject, image_id))
        return made

    def sign(self, target: Target, digest: str, image_id: str, platform: str = "") -> Attached:
        """Signs `digest` (the manifest of image `image_id`, or an index whose first image it
        is) in `target` and attaches its attestations."""
        subject = Subject(target.reference, digest)
        attached = attach(
            target,
            digest,
            self.signer,
            self.attestations(subject, image_id, platform),
            self.progress,
        )
        with self._lock:
            self._attached.setdefault(target.name, []).append(attached)
        return attached

    def attached(self, registry: str) -> list[Attached]:
        with self._lock:
            return list(self._attached.get(registry, ()))


def image_signing(
    settings: Settings,
    engine: Engine,
    progress: Progress = quiet,
    environ: Mapping[str, str] | None = None,
) -> ImageSigning | None:
    """The push's signing when a key is set (loaded now: a wrong passphrase fails before
    anything is built or pushed), else None."""
    if not settings.signing_key:
        return None
    signer = load_settings_signer(settings, environ)
    progress(f"signing with {signer.description} ({key_id(signer.public_key)[:19]})")

    @functools.cache
    def engine_platform() -> str:
        return str(engine.platform())

    return ImageSigning(settings, signer, engine_platform, progress=progress)
