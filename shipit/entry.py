"""The console script. `shipit --version` answers here, before typer and click are imported,
so scripts that probe the version pay only for the interpreter."""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        from shipit import __version__

        print(f"shipit {__version__}")
        return 0
    from shipit.cli import main as cli_main

    return cli_main()
