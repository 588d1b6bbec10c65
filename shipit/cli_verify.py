"""`shipit verify REF --key PUB`: a deployer's check of a pushed image, its signature and
attestations (shipit/signing/verify.py). Parses and prints only, as cli.py does."""

from __future__ import annotations

from typing import Annotated

import typer

from shipit.cli_common import CommonOptions, setup, ui, with_options


def _predicate_type(name: str) -> str:
    """cosign's names for --type (spdxjson, slsaprovenance1), shipit's `smoke`, or a URI."""
    from shipit.attest.statement import SLSA_PROVENANCE_V1, SMOKE_TEST_V1, SPDX_DOCUMENT

    names = {
        "spdxjson": SPDX_DOCUMENT,
        "slsaprovenance1": SLSA_PROVENANCE_V1,
        "smoke": SMOKE_TEST_V1,
    }
    return names.get(name, name)


@with_options(CommonOptions)
def verify(
    common: CommonOptions,
    reference: Annotated[
        str, typer.Argument(help="The image: REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST.")
    ],
    key: Annotated[
        str,
        typer.Option(
            "--key", help="Public key: a PEM file (cosign.pub) or awskms:///ALIAS-OR-ARN."
        ),
    ],
    required: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="An attestation that must be there, repeatable: spdxjson, slsaprovenance1, "
            "smoke, or a predicate type URI.",
        ),
    ] = None,
) -> None:
    """Check the signature and attestations of a pushed image with a public key, and say
    whether this digest passed shipit's smoke test.

    Registry credentials come from DOCKER_CONFIG's config.json, as cosign reads them.
    Example: shipit verify registry.example.com/site@sha256:... --key cosign.pub --type smoke
    """
    settings = setup(common)
    from shipit.signing.image_signing import aws_session
    from shipit.signing.keys import load_public_key
    from shipit.signing.verify import verify_image

    public_key = load_public_key(key, aws_session, region=settings.aws_region)
    types = [_predicate_type(name) for name in required or ()]
    report = verify_image(reference, public_key, types)
    rows = [
        [
            check.digest[:19] + (f" {check.platform}" if check.platform else ""),
            "yes" if check.signed else "NO",
            ", ".join(check.attested) or "-",
            "-"
            if check.smoke is None
            else f"{'passed' if check.smoke.get('passed') else 'FAILED'} "
            f"{check.smoke.get('testedAt', '')}",
        ]
        for check in report.checks
    ]
    table = ui().table(
        f"{report.reference} (key {report.key_id[:19]})",
        ["digest", "signed", "attested", "smoke test"],
        rows,
    )
    ui().result(report.to_json(), table)
    failure = report.failure()
    if failure is not None:
        raise failure
