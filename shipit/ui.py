"""Everything shipit writes for people and scripts goes through here, redacted.

Results go to stdout (one JSON document with --json), progress and errors to stderr, so a
script can pipe `shipit ... --json` into jq and still see what happens.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from shipit.ci_kind import in_ci
from shipit.errors import OutputClosed, ShipitError
from shipit.redact import redact

# Red, then back to normal: a failure stands out in a terminal.
_RED = "\x1b[31m"
_RESET = "\x1b[0m"


def no_color() -> bool:
    """NO_COLOR set to anything (https://no-color.org), or a dumb terminal: not one escape
    sequence, neither colour nor bold, italic or cursor movement."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def _console(**options: Any) -> Any:
    """A rich Console that writes styles only when colour is wanted: rich's own NO_COLOR
    support drops colours but keeps bold and italic."""
    from rich.console import Console

    return Console(color_system=None if no_color() else "auto", **options)


if TYPE_CHECKING:
    from shipit.push.report import PushReport


@dataclass
class Ui:
    json_output: bool = False
    quiet: bool = False
    debug: bool = False
    # Per-layer push bars, only in a terminal; created on the first layer event.
    _bars: Any = field(default=None, repr=False)
    _bar_tasks: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # With --json the result is held until the command ends: a failure that follows the
    # report (a failing doctor, smoke or push) goes into the same document, not a second one.
    _pending: dict[str, Any] | None = field(default=None, repr=False)
    # Set by push and ship: in GitHub Actions the step's files get what was pushed, or what
    # failed, once per command.
    step_command: str | None = None
    _step_files_written: bool = field(default=False, repr=False)

    @property
    def plain(self) -> bool:
        """Plain lines rather than rich tables: not a terminal, or running in CI."""
        return in_ci(os.environ) or not sys.stdout.isatty()

    def _write(self, stream: TextIO, text: str, *, failure: bool = False) -> None:
        text = redact(text)
        if failure and not no_color() and stream.isatty():
            text = _RED + text + _RESET
        try:
            stream.write(text + "\n")
            stream.flush()
        except BrokenPipeError as exc:
            raise OutputClosed("the reader of shipit's output went away") from exc

    @property
    def interactive(self) -> bool:
        """Rich progress on stderr: a terminal, not CI, not --quiet, not NO_COLOR (the bars
        move the cursor with escape sequences)."""
        return not self.quiet and not in_ci(os.environ) and not no_color() and sys.stderr.isatty()

    def progress(self, message: str) -> None:
        if self.quiet:
            return
        if self._bars is not None:
            # Printed above the live bars instead of tearing through them.
            self._bars.console.print(redact(message), markup=False, highlight=False)
            return
        self._write(sys.stderr, message)

    def layer_progress(self, label: str, status: str, done: int, total: int) -> None:
        """One bar per registry and layer while pushing; plain output gets a line per
        finished layer from the push itself, so nothing is needed here then."""
        if not self.interactive:
            return
        with self._lock:
            if self._bars is None:
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                )

                self._bars = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    console=_console(stderr=True),
                    transient=True,
                )
                self._bars.start()
            task = self._bar_tasks.get(label)
            if task is None:
                task = self._bars.add_task(label, total=total or None)
                self._bar_tasks[label] = task
        self._bars.update(
            task, completed=done, total=total or None, description=f"{label} {status}"
        )

    def close(self) -> None:
        with self._lock:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
                self._bar_tasks.clear()

    def result(self, data: dict[str, Any], human: str) -> None:
        self.close()
        if self.json_output:
            self._pending = data
        else:
            self._write(sys.stdout, human)

    def push_result(self, data: dict[str, Any], human: str, report: PushReport) -> None:
        """A push's result; --quiet prints one REGISTRY/REPO@DIGEST line per registry that
        serves the image, as crane and ko do, so `$(shipit push -q)` is usable as is. A dry
        run prints `REGISTRY/REPO:TAG (dry run)` per reference it would push: the first field
        is the reference, and the marker keeps it from passing for one that was pushed."""
        if self.quiet and not self.json_output:
            self.close()
            if report.dry_run:
                planned = (ref for target in report.targets for ref in target.planned())
                lines = [f"{ref} (dry run)" for ref in planned]
            else:
                lines = [target.pinned for target in report.delivered]
            if lines:
                self._write(sys.stdout, "\n".join(lines))
        else:
            self.result(data, human)
        failure = report.failure()
        self._write_step_files(report, None if failure is None else failure.one_line())

    def _write_step_files(self, report: PushReport | None, failure: str | None) -> None:
        if self.step_command is None or self._step_files_written:
            return
        self._step_files_written = True
        from shipit.push.github import write_step_files

        try:
            write_step_files(self.step_command, report, failure)
        except OSError as exc:
            # The push itself is done; a step file that cannot be written is only a warning.
            self._write(sys.stderr, f"shipit: warning: cannot write the GitHub step files: {exc}")

    def finish(self) -> None:
        """Write the held JSON document; the command succeeded."""
        if self._pending is not None:
            document, self._pending = self._pending, None
            self._write_json(document)

    def _write_json(self, document: dict[str, Any]) -> None:
        self._write(sys.stdout, json.dumps(document, indent=2, sort_keys=True, default=str))

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        """A table as text: rich in a terminal, aligned plain columns otherwise."""
        cells = [[redact(str(cell)) for cell in row] for row in rows]
        if not self.plain:
            from io import StringIO

            from rich.table import Table

            table = Table(title=title, show_lines=False)
            for header in headers:
                # Folded, never cut with an ellipsis: a reference or digest is copied whole.
                table.add_column(header, overflow="fold")
            for row in cells:
                table.add_row(*row)
            buffer = StringIO()
            width = shutil.get_terminal_size().columns
            _console(file=buffer, force_terminal=True, width=width).print(table)
            return buffer.getvalue().rstrip()
        widths = [
            max(len(header), *(len(row[i]) for row in cells)) if cells else len(header)
            for i, header in enumerate(headers)
        ]
        lines = [title] if title else []
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        lines.extend(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells
        )
        return "\n".join(lines)

    def error(self, error: ShipitError) -> None:
        self.close()
        self._write_step_files(None, error.one_line())
        if self.debug:
            self._write(sys.stderr, "".join(traceback.format_exception(error)).rstrip())
        self._write(sys.stderr, f"shipit: error: {error.one_line()}", failure=True)
        if error.details:
            self._write(sys.stderr, error.details)
        if self.json_output:
            self._fail_json(error.to_json())

    def _fail_json(self, error: dict[str, Any]) -> None:
        document, self._pending = self._pending or {}, None
        self._write_json({**document, "ok": False, "error": error})

    def internal_error(self, error: BaseException) -> None:
        self.close()
        if self.debug:
            self._write(sys.stderr, "".join(traceback.format_exception(error)).rstrip())
        hint = "run again with --debug and report it"
        message = f"internal error: {type(error).__name__}: {error}"
        self._write_step_files(None, message)
        self._write(sys.stderr, f"shipit: {message}; {hint}", failure=True)
        if self.json_output:
            self._fail_json(
                {
                    "class": "InternalError",
                    "exit_code": 1,
                    "message": message,
                    "hint": hint,
                }
            )
