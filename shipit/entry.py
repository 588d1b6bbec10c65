"""The console script. `shipit --version` and `shipit --help` answer here, before typer is
imported, so scripts that probe the tool pay little more than the interpreter's start-up.

The top-level help is the text typer prints, rendered ahead of time into help.txt (`make
help`; a test keeps it equal to typer's). Click wraps help to min(terminal width, 80)
columns, so the stored text is exact wherever the terminal is at least 80 columns wide.
"""

from __future__ import annotations

import os
import sys

from shipit.helptext import HELP_FILE, HELP_WIDTH


def _stored_help() -> str | None:
    import shutil  # as click measures the terminal

    if shutil.get_terminal_size().columns < HELP_WIDTH:
        return None
    try:
        with open(HELP_FILE, encoding="utf-8") as stored:
            return stored.read()
    except OSError:
        return None


def main() -> int:
    arguments = sys.argv[1:]
    if arguments == ["--version"]:
        from shipit import __version__

        print(f"shipit {__version__}")
        return 0
    if arguments == ["--help"]:
        text = _stored_help()
        if text is not None:
            sys.stdout.write(text)
            return 0
    from shipit import interrupts

    # SIGTERM (a CI runner's cancel) then cleans up as Ctrl-C does, instead of ending
    # shipit where it stands.
    interrupts.install()
    from shipit.cli import main as cli_main

    return cli_main()


def run() -> None:
    """The console script: main(), then an exit without the interpreter's teardown.

    When main() returns, every container, tag, temporary file and connection shipit opened
    has been dealt with by its own code; what remains is tearing down the modules of docker
    and botocore, about 0.09 s of every command. Output is flushed first."""
    try:
        code = main()
    except BrokenPipeError:
        from shipit.errors import ExitCode

        code = ExitCode.BROKEN_PIPE
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        # A closed pipe: nothing more can be said there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
