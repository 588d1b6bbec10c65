"""What a push leaves for the next step of a GitHub Actions job.

GitHub hands every step two files: GITHUB_OUTPUT, read as `steps.<id>.outputs.<name>`, and
GITHUB_STEP_SUMMARY, Markdown shown on the run's page. Both are appended to, never replaced:
earlier steps and other tools write to the same files.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from shipit.push.report import PushReport
from shipit.redact import redact


def output_lines(report: PushReport) -> str:
    """`digest=...` and a multiline `refs` in GitHub's `name<<DELIMITER` syntax."""
    references = [ref for target in report.delivered for ref in target.references()]
    # A random delimiter, as GitHub's docs ask, so that no value can end the block early.
    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
    return "".join(
        [
            f"digest={report.digest}\n",
            f"refs<<{delimiter}\n",
            *(f"{reference}\n" for reference in references),
            f"{delimiter}\n",
        ]
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(command: str, report: PushReport | None, failure: str | None) -> str:
    title = f"shipit {command}" + (" (dry run)" if report and report.dry_run else "")
    lines = [f"### {title}: {'failed' if failure else 'done'}", ""]
    if failure:
        lines += [f"**Failed:** {_cell(failure)}", ""]
    if report is not None and report.targets:
        lines += ["| registry | reference | digest | status |", "| --- | --- | --- | --- |"]
        for target in report.targets:
            status = target.status
            if target.error is not None:
                status += f": {target.error.one_line()}"
            tags = ", ".join(f"`{tag.tag}`" for tag in target.tags if tag.status != "failed")
            reference = f"`{target.reference}`" + (f" ({tags})" if tags else "")
            digest = f"`{target.digest}`" if target.digest else "-"
            lines.append(f"| {target.name} | {reference} | {digest} | {_cell(status)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _append(path: str, text: str) -> None:
    # Nothing secret reaches the job's files: they are shown on the run's page and passed on.
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(redact(text))


def write_step_files(
    command: str,
    report: PushReport | None,
    failure: str | None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Outputs only for a real push that succeeded; the summary also says what failed."""
    output_file = env.get("GITHUB_OUTPUT")
    succeeded = failure is None and report is not None and not report.dry_run
    if output_file and succeeded and report is not None and report.digest:
        _append(output_file, output_lines(report))
    if env.get("GITHUB_STEP_SUMMARY"):
        _append(env["GITHUB_STEP_SUMMARY"], summary_markdown(command, report, failure))
