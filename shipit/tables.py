"""The tables the commands print, one per kind of report: its rows, drawn by Ui.table (rich in
a terminal, aligned plain columns otherwise)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipit.digests import short_id

if TYPE_CHECKING:
    from shipit.doctor import DoctorReport
    from shipit.iam.access import CheckReport
    from shipit.push import PushReport
    from shipit.smoke import SmokeReport
    from shipit.ui import Ui


def smoke_table(ui: Ui, report: SmokeReport) -> str:
    rows = [("ok" if check.ok else "FAIL", check.name, check.detail) for check in report.checks]
    if report.screenshot is not None:
        shot = report.screenshot
        detail = (
            f"{shot['path']} ({shot['width']}x{shot['height']})"
            if "error" not in shot
            else f"not taken: {shot['error']}"
        )
        rows.append(("ok" if "error" not in shot else "warn", "screenshot", detail))
    if report.crawl is not None:
        if report.crawl.external_origins:
            origins = ", ".join(report.crawl.external_origins)
            rows.append(("-", "other origins", f"not fetched: {origins}"))
        if report.crawl.partly_parsed:
            rows.append(("warn", "crawl", report.crawl.partly_parsed_note()))
    return ui.table(f"smoke test of {report.url}", ("result", "check", "detail"), rows)


def push_table(ui: Ui, report: PushReport) -> str:
    rows = []
    for target in report.targets:
        tags = ", ".join(f"{tag.tag} {tag.status}" for tag in target.tags)
        outcome = target.status
        if target.error is not None:
            outcome += f": {target.error.one_line()}"
        rows.append(
            (
                target.name,
                target.reference or "-",
                target.digest or "-",
                tags or "-",
                f"{target.bytes_uploaded:,}",
                f"{target.seconds:.1f}",
                outcome,
            )
        )
    title = ("push plan" if report.dry_run else "push") + f" of {short_id(report.image_id)}"
    table = ui.table(
        title, ("registry", "reference", "digest", "tags", "bytes", "s", "result"), rows
    )
    notes = [f"{target.name}: {note}" for target in report.targets for note in target.notes]
    return "\n".join([table, *notes])


def setting_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, list):  # [[registries]] tables
        return ", ".join(f"{entry['name']} = {entry['repository']}" for entry in value)
    return str(value)


def doctor_table(ui: Ui, report: DoctorReport) -> str:
    marks = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    rows = [(marks[check.outcome], check.name, check.one_line()) for check in report.checks]
    return ui.table("shipit doctor", ("result", "check", "detail"), rows)


def check_table(ui: Ui, report: CheckReport) -> str:
    from shipit.iam.access import VERDICT_LABELS

    rows = [
        (
            VERDICT_LABELS[decision.decision],
            decision.action,
            decision.resource,
            "; ".join(f"{c.test.operator} {c.test.key}" for c in decision.conditions) or "-",
            decision.reason,
        )
        for decision in report.decisions
    ]
    title = "IAM check of " + ", ".join(report.policies)
    return ui.table(title, ("result", "action", "resource", "condition", "why"), rows)
