"""shipit's smoke-test attestation (predicate type statement.SMOKE_TEST_V1, documented in
docs/attestations.md): this digest, run on this platform, served these pages and passed
these checks at this time. No other builder runs the image before it pushes it, so a
deployer's policy can admit only images that passed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipit import __version__
from shipit.attest.provenance import rfc3339
from shipit.attest.statement import PROJECT_URL
from shipit.smoke import Check, SmokeReport

if TYPE_CHECKING:
    from shipit.config import Settings


@dataclass(frozen=True)
class SmokeRun:
    """One platform's smoke test: the report, the image the container ran (the engine's
    id: its config's digest) and when the checks ran."""

    report: SmokeReport
    platform: str
    image_id: str
    tested_at: dt.datetime


def earlier_smoke_run(settings: Settings, image_id: str, platform: str) -> SmokeRun | None:
    """The smoke test an image passed in an earlier command (state.smoke_record_of), for a
    ship that reuses that pass and runs no container; None when no pass counts or it was
    recorded without its checks (by a shipit before they were kept)."""
    from shipit.state import smoke_record_of

    record = smoke_record_of(settings, image_id)
    checks = record.get("checks") if record is not None else None
    if record is None or not isinstance(checks, list) or not checks:
        return None
    try:
        tested_at = dt.datetime.fromisoformat(str(record["at"]))
        report = SmokeReport(
            url=str(record["url"]),
            expected_build_id=str(record["build_id"]),
            # A pass served the build id it expected: the build id check says so.
            served_build_id=str(record["build_id"]),
            checks=[Check(str(c["name"]), bool(c["ok"]), str(c["detail"])) for c in checks],
        )
    except (KeyError, TypeError, ValueError):
        return None
    return SmokeRun(report, platform, image_id, tested_at)


def smoke_predicate(run: SmokeRun, image_digest: str) -> dict[str, Any]:
    """The predicate for the image `image_digest` (its manifest's digest, the statement's
    subject) whose container `run` tested."""
    report = run.report
    return {
        "tester": {"id": PROJECT_URL, "version": {"shipit": __version__}},
        "url": report.url,
        "platform": run.platform,
        "image": {"digest": image_digest, "configDigest": run.image_id},
        "testedAt": rfc3339(run.tested_at),
        "passed": report.ok,
        "expectedBuildId": report.expected_build_id,
        "servedBuildId": report.served_build_id,
        "checks": [
            {"name": check.name, "passed": check.ok, "detail": check.detail}
            for check in report.checks
        ],
    }
