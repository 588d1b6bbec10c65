"""The push's signing: the key the signing_key setting names, loaded (and so checked) before
anything is built or pushed, and what it signs and attests for the digests the push uploads.
The push calls `sign` after the manifests are in a registry by digest and before the first
tag names them (push/steps.py).

What is attested comes from `Attesting` (signing/ship_attestations.py): for a ship, every
statement of `attest.attestations_for` (SLSA provenance, an SPDX SBOM per platform, the smoke
test per platform); for a push of an earlier build, its smoke test. They are made only when
some digest in some registry lacks this key's signature, once per registry (their subject
names the repository), and each digest gets the statements that name it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipit.attest.statement import Attestation
from shipit.config import Settings
from shipit.progress import Progress, quiet
from shipit.signing.attach import Attached, attach
from shipit.signing.checks import statement_names
from shipit.signing.ecdsa import key_id
from shipit.signing.keys import Signer, load_signer
from shipit.signing.ship_attestations import Attesting, PushedManifest

if TYPE_CHECKING:
    from shipit.aws import AwsSession
    from shipit.registries.registry import Target


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

    signer: Signer
    attesting: Attesting
    progress: Progress = quiet
    _attached: dict[str, list[Attached]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def key_id(self) -> str:
        return key_id(self.signer.public_key)

    def sign(
        self, target: Target, manifests: Sequence[PushedManifest], index_digest: str = ""
    ) -> None:
        """Signs each platform's manifest, then the index (when there is one), in `target`,
        each with the attestations that name it."""
        made: list[Attestation] | None = None

        def statements() -> list[Attestation]:
            nonlocal made
            if made is None:
                made = self.attesting.attestations(target.reference, manifests, index_digest)
            return made

        digests = [(each.digest, self.attesting.types(manifests, [each])) for each in manifests]
        if index_digest:
            digests.append((index_digest, self.attesting.types(manifests, manifests)))
        for digest, types in digests:

            def naming(digest: str = digest) -> list[Attestation]:
                return [each for each in statements() if statement_names(each.statement, digest)]

            attached = attach(target, digest, self.signer, naming, self.progress, types=types)
            with self._lock:
                self._attached.setdefault(target.name, []).append(attached)

    def attached(self, registry: str) -> list[Attached]:
        with self._lock:
            return list(self._attached.get(registry, ()))


def image_signing(
    settings: Settings,
    attesting: Attesting,
    progress: Progress = quiet,
    environ: Mapping[str, str] | None = None,
) -> ImageSigning | None:
    """The push's signing when a key is set (loaded now: a wrong passphrase fails before
    anything is built or pushed), else None."""
    if not settings.signing_key:
        return None
    signer = load_settings_signer(settings, environ)
    progress(f"signing with {signer.description} ({key_id(signer.public_key)[:19]})")
    return ImageSigning(signer, attesting, progress=progress)
