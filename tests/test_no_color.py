"""NO_COLOR (https://no-color.org) means not one escape sequence, in a real terminal; without
it a failure is red there. Each command runs in a pseudo-terminal, as a user's shell runs it."""

from __future__ import annotations

import os
import pty
import re
import select
import sys
import time

import pytest

from tests.conftest import Project

ESCAPE = "\x1b["
RED = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:31|91|38;5;\d+)m")


def in_terminal(project: Project, *args: str, **env: str) -> tuple[int, str]:
    """The exit code and everything shipit wrote (stdout and stderr share the terminal)."""
    environment = {
        **{key: value for key, value in project.env().items() if key not in ("CI", "NO_COLOR")},
        "TERM": "xterm-256color",
        "COLUMNS": "100",
        **env,
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: shipit, with the terminal as its stdin, stdout and stderr
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "-m", "shipit", *args], environment)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal: it has ended
                break
            if not chunk:
                break
            output += chunk
        else:
            os.kill(pid, 9)
            pytest.fail(f"shipit {' '.join(args)} did not end within 60 s: {output!r}")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")


COMMANDS = {
    "help": (("--help",), 0, "Usage: shipit"),
    "iam check help": (("iam", "check", "--help"), 0, "Usage: shipit iam check"),
    "failing command": (("iam", "check", "--policy", "missing.json"), 3, "shipit: error:"),
    "usage error": (("config", "--bogus"), 2, "shipit: error:"),
    "table": (("config",), 0, "shipit settings"),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_no_color_means_no_escape_at_all(project: Project, name: str) -> None:
    args, code, expected = COMMANDS[name]
    returned, output = in_terminal(project, *args, NO_COLOR="1")
    assert returned == code, output
    assert expected in output
    assert ESCAPE not in output, repr(output)


def test_without_no_color_the_table_is_styled(project: Project) -> None:
    """The terminal above passes escapes through: their absence there is NO_COLOR's doing."""
    returned, output = in_terminal(project, "config")
    assert returned == 0, output
    assert ESCAPE in output


@pytest.mark.parametrize("no_color", [None, ""], ids=["unset", "empty"])
def test_a_failure_is_red_in_a_terminal(project: Project, no_color: str | None) -> None:
    env = {} if no_color is None else {"NO_COLOR": no_color}
    returned, output = in_terminal(project, "iam", "check", "--policy", "missing.json", **env)
    assert returned == 3, output
    (line,) = [line for line in output.splitlines() if "shipit: error:" in line]
    assert RED.search(line), repr(line)


def test_a_failure_is_not_coloured_in_a_pipe(project: Project) -> None:
    result = project.shipit("iam", "check", "--policy", "missing.json")
    assert result.code == 3
    assert ESCAPE not in result.stderr
