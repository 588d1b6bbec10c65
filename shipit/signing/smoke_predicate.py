"""shipit's smoke-test predicate: "this image served these pages and passed these checks, at
this time, on this platform", the one attestation no other tool can make.

Predicate type SMOKE_TEST (README, "How a deployer checks a shipit image"); its predicate:

    {"passed": true, "url": "http://127.0.0.1:8080", "at": "2026-12-04T20:00:00+00:00",
     "platform": "linux/amd64", "image_id": "sha256:<config digest that ran>",
     "build_id": "<the build id / served>", "shipit_version": "0.9.0",
     "checks": [{"name": "GET /", "ok": true, "detail": "200 text/html"}, ...]}

The interim builder of the signing half: `shipit/attest/` builds the SBOM and provenance and
may take this predicate over; the signing code takes any list of Attestation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shipit.attest.statement import Attestation, Subject, statement

SMOKE_TEST = "https://shipit.dev/attestations/smoke-test/v1"


def smoke_predicate(
    passed: Mapping[str, str], checks: Sequence[Mapping[str, Any]], platform: str
) -> dict[str, Any]:
    """The predicate of a recorded smoke pass (shipit/state.py's record) of one image."""
    return {
        "passed": True,
        "url": passed.get("url", ""),
        "at": passed.get("at", ""),
        "platform": platform,
        "image_id": passed.get("image_id", ""),
        "build_id": passed.get("build_id", ""),
        "shipit_version": passed.get("shipit_version", ""),
        "checks": [
            {
                "name": str(each.get("name", "")),
                "ok": bool(each.get("ok")),
                "detail": str(each.get("detail", "")),
            }
            for each in checks
        ],
    }


def smoke_attestation(
    subjects: list[Subject],
    passed: Mapping[str, str],
    checks: Sequence[Mapping[str, Any]],
    platform: str,
) -> Attestation:
    return statement(subjects, SMOKE_TEST, smoke_predicate(passed, checks, platform))
