"""pytest plugin: the reliability table in docs/RELIABILITY.md, written from a test run that
asks for it (`make reliability`, or pytest --reliability-doc PATH).

A test declares the case it checks and the outcome the README promises:

    @pytest.mark.reliability("registry answers 503 twice", "exit 0 after retries")
    def test_x(reliability: Recorder) -> None:
        result = project.shipit("push")
        reliability.result(result)       # exit code and the first error line
        reliability.observe("3 attempts") # anything else worth a column

At the end of the session the plugin merges what this run observed into the table: each
row is one test item (its node id is the key) with the case, the expected outcome, the
observed one, pass or FAIL, and the date it last ran. Rows of tests that did not run this
time keep what an earlier run observed, so running one file never loses the others' rows;
rows of tests that no longer exist are dropped once their module is collected in full.
The machine-readable rows live in an HTML comment at the end of the file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import re
from collections.abc import Generator, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

MARKER = "reliability"
DATA_START = "<!-- reliability-data"
DATA_END = "-->"
MAX_CELL = 220
_RECORDER = pytest.StashKey["Recorder"]()
_STATE = pytest.StashKey["_SessionState"]()


class _Completed(Protocol):
    code: int
    stderr: str


@dataclass
class Row:
    test: str  # the node id: the key
    section: str
    case: str
    expected: str
    observed: str
    result: str  # pass | FAIL | skipped
    ran: str  # UTC date and time of the run that observed it
    order: int = 0


@dataclass
class Recorder:
    """What one reliability test observed; the plugin adds pass/FAIL after the test."""

    case: str
    expected: str
    observations: list[str] = field(default_factory=list)
    outcome: str = ""
    failure: str = ""

    def observe(self, text: str) -> None:
        self.observations.append(stable(" ".join(str(text).split())))

    def result(self, completed: _Completed) -> None:
        """The exit code and the first error line of a finished shipit command."""
        self.observe(f"exit {completed.code}")
        error = first_error_line(completed.stderr)
        if error:
            self.observe(error)

    def text(self) -> str:
        parts = list(self.observations)
        if self.failure:
            parts.append(f"test failed: {stable(self.failure)}")
        return "; ".join(parts) or "(nothing recorded)"


# What differs on every run without saying anything about the outcome: free ports, pytest's
# temporary folders, random image names and ids. Masked, so the table changes only when an
# outcome does.
_UNSTABLE = (
    (re.compile(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^\s;,'\")]*"), "TMP"),
    (re.compile(r"\b((?:\d{1,3}\.){3}\d{1,3}):\d{2,5}\b"), r"\1:PORT"),
    (re.compile(r"\b(?:sha256:)?[0-9a-f]{10,64}\b"), "ID"),
)


def stable(text: str) -> str:
    for pattern, replacement in _UNSTABLE:
        text = pattern.sub(replacement, text)
    return text


def first_error_line(stderr: str) -> str:
    """shipit's own error line, else click's `Error:` line of a usage error."""
    lines = stderr.splitlines()
    for prefixes in (("shipit: error:", "shipit: internal error:"), ("Error:",)):
        for line in lines:
            if line.startswith(prefixes):
                return line.strip()
    return ""


@dataclass
class _SessionState:
    doc: Path | None
    started: str
    items: dict[str, pytest.Item] = field(default_factory=dict)
    deselected: set[str] = field(default_factory=set)
    rows: dict[str, Row] = field(default_factory=dict)
    declared: int = 0


# -- hooks -------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--reliability-doc",
        default=None,
        help="write the reliability table there (`make reliability` writes "
        "docs/RELIABILITY.md); without it the outcomes are only collected",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(case, expected): a fault or bad-input case for docs/RELIABILITY.md",
    )
    doc: Path | None = None
    # Under pytest-xdist only the controller writes.
    chosen = config.getoption("reliability_doc")
    if chosen and not hasattr(config, "workerinput"):
        doc = Path(chosen)
    config.stash[_STATE] = _SessionState(doc=doc, started=_now())


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        state = items[0].config.stash[_STATE]
        state.deselected.update(item.nodeid for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    for item in session.items:
        state.items[item.nodeid] = item
        if item.get_closest_marker(MARKER) is not None:
            state.declared += 1


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    """The recorder of this test's reliability case (the test needs the marker)."""
    recorder: Recorder | None = request.node.stash.get(_RECORDER, None)
    if recorder is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses the reliability fixture without "
            f"@pytest.mark.{MARKER}(case, expected)"
        )
    return recorder


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return
    case = marker.args[0] if marker.args else marker.kwargs.get("case", item.name)
    expected = marker.args[1] if len(marker.args) > 1 else marker.kwargs.get("expected", "")
    item.stash[_RECORDER] = Recorder(case=str(case), expected=str(expected))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    recorder = item.stash.get(_RECORDER, None)
    if recorder is None:
        return report
    if report.failed and not recorder.failure:
        recorder.failure = _short_failure(report, call)
    if report.when == "call" or report.failed or report.skipped:
        if report.skipped:
            recorder.outcome = recorder.outcome or "skipped"
        elif report.failed:
            recorder.outcome = "FAIL"
        elif report.when == "call":
            recorder.outcome = recorder.outcome or "pass"
    return report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    yield
    recorder = item.stash.get(_RECORDER, None)
    if recorder is None:
        return
    state = item.config.stash[_STATE]
    module = item.nodeid.split("::", 1)[0]
    siblings = [nodeid for nodeid in state.items if nodeid.split("::", 1)[0] == module]
    state.rows[item.nodeid] = Row(
        test=item.nodeid,
        section=_section(item),
        case=recorder.case,
        expected=recorder.expected,
        observed=recorder.text(),
        result=recorder.outcome or "FAIL",
        ran=state.started,
        order=siblings.index(item.nodeid) if item.nodeid in siblings else 0,
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash[_STATE]
    if not state.rows:
        return
    terminalreporter.section("reliability")
    for row in sorted(state.rows.values(), key=lambda r: (r.test.split("::")[0], r.order)):
        terminalreporter.write_line(f"{row.result:5} {row.case}: {_cell(row.observed)}")
    if state.doc is not None:
        terminalreporter.write_line(f"table written to {state.doc}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash[_STATE]
    if state.doc is None or not state.rows:
        return
    complete = _fully_collected_modules(session.config, state)
    known = set(state.items) | state.deselected
    state.doc.parent.mkdir(parents=True, exist_ok=True)
    # Locked read-merge-write: two sessions finishing at once must not lose each other's rows.
    with state.doc.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        previous = parse_rows(handle.read())
        rows = merge_rows(previous, state.rows.values(), known, complete, session.config.rootpath)
        all_ran = state.declared > 0 and len(state.rows) == state.declared == len(rows)
        handle.seek(0)
        handle.truncate()
        handle.write(render_doc(rows, state.started, all_ran=all_ran))


# -- the document ------------------------------------------------------------------------


def merge_rows(
    previous: Iterable[Row],
    observed: Iterable[Row],
    known: set[str],
    complete_modules: set[str],
    root: Path,
) -> list[Row]:
    """This run's rows over the earlier ones; earlier rows whose test is gone are dropped."""
    merged: dict[str, Row] = {}
    for row in previous:
        module = row.test.split("::", 1)[0]
        if not (root / module).exists():
            continue  # the test file is gone
        if module in complete_modules and row.test not in known:
            continue  # the module was collected in full and this test is not in it any more
        merged[row.test] = row
    for row in observed:
        merged[row.test] = row
    return sorted(merged.values(), key=lambda r: (r.section, r.test.split("::")[0], r.order))


def read_rows(doc: Path) -> list[Row]:
    try:
        return parse_rows(doc.read_text(encoding="utf-8"))
    except OSError:
        return []


def parse_rows(text: str) -> list[Row]:
    """The rows kept in the document's data comment ([] for anything unreadable)."""
    start = text.find(DATA_START)
    if start < 0:
        return []
    end = text.find(DATA_END, start)
    if end < 0:
        return []
    try:
        data = json.loads(text[start + len(DATA_START) : end])
    except ValueError:
        return []
    rows = []
    for entry in data.get("rows", []) if isinstance(data, dict) else []:
        try:
            rows.append(Row(**entry))
        except TypeError:
            continue
    return rows


def render_doc(rows: list[Row], started: str, *, all_ran: bool) -> str:
    runs = sorted({row.ran for row in rows})
    failed = [row for row in rows if row.result != "pass"]
    lines = [
        "# Reliability: faults survived, bad input refused, nothing leaked",
        "",
        "Generated by `tests/reliability.py` at the end of a pytest run; do not edit by hand.",
        "Each row is a test in tests/test_faults.py, test_abuse.py, test_security.py or",
        "test_load.py, run against the real Docker engine, real Distribution registries",
        "(through `tests/faultproxy.py` where a fault is injected) and moto.",
        "",
        f"- last run: {started}"
        + (
            " (every case ran in it)"
            if all_ran
            else " (not every case ran in it: other rows keep the date they last ran)"
        ),
        f"- runs shown: {', '.join(runs)}",
        f"- cases: {len(rows)}, passing: {len(rows) - len(failed)}, failing: {len(failed)}",
        "",
    ]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines += [
                f"## {section}",
                "",
                "| case | expected | observed | result | ran |",
                "|---|---|---|---|---|",
            ]
        lines.append(
            f"| {_cell(row.case)} | {_cell(row.expected)} | {_cell(row.observed)} "
            f"| {row.result} | {row.ran} |"
        )
        if row is rows[-1] or rows[rows.index(row) + 1].section != section:
            lines.append("")
    data = json.dumps({"rows": [asdict(row) for row in rows]}, indent=1, sort_keys=True)
    # ">" only occurs inside JSON strings, so escaping it keeps "-->" out of the comment.
    lines += [DATA_START, data.replace(">", "\\u003e"), DATA_END, ""]
    return "\n".join(lines)


# -- helpers -----------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell(text: str) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= MAX_CELL else flat[: MAX_CELL - 1] + "…"


def _section(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    doc = (getattr(module, "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else item.nodeid.split("::", 1)[0]


def _short_failure(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    if call.excinfo is not None:
        message = call.excinfo.exconly().splitlines()
        asserted = [i for i, line in enumerate(message) if line.strip().startswith("assert ")]
        if asserted and asserted[0] != 1:
            # A message of many lines (a command's output) says less than pytest's own
            # `assert a == b` line; a one-line message says more.
            text = f"{call.excinfo.typename}: {message[asserted[0]].strip()}"
        else:
            text = message[0] if message else call.excinfo.typename
    else:
        text = str(report.longrepr).splitlines()[-1] if report.longrepr else "failed"
    return re.sub(r"\s+", " ", text)[:MAX_CELL]


def _fully_collected_modules(config: pytest.Config, state: _SessionState) -> set[str]:
    """Modules none of whose tests was left out by a node id on the command line."""
    partial = {arg.split("::", 1)[0] for arg in config.args if "::" in arg}
    modules = {nodeid.split("::", 1)[0] for nodeid in (*state.items, *state.deselected)}
    partial_rel = set()
    for path in partial:
        try:
            partial_rel.add(Path(path).resolve().relative_to(config.rootpath).as_posix())
        except ValueError:
            partial_rel.add(path)
    return {module for module in modules if module not in partial_rel}
