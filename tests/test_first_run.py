"""A new user's first minutes: shipit init, a screenshot of the page, help with examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from PIL import Image, ImageChops

from harness.services import free_port
from shipit import __version__, entry
from shipit.cli import app
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import Project, Result, shipit_containers

# What CI would install; this checkout may have no remote to name.
PINNED_INSTALL = "git+https://github.com/acme/shipit@" + "0" * 40


def init_demo(tmp_path: Path, image: str) -> Project:
    demo = tmp_path / "demo"
    env = Project(root=tmp_path, image=image).env()
    completed = subprocess.run(
        [sys.executable, "-m", "shipit", "init", str(demo), "--install", PINNED_INSTALL],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return Project(root=demo, image=image)


def run_with_screenshot(project: Project, png: Path, *extra: str) -> Result:
    return project.shipit(
        "run",
        "--port",
        str(free_port()),
        "--screenshot",
        str(png),
        "--window",
        "800x600",
        "--json",
        *extra,
    )


def test_init_then_run_serves_and_screenshots_the_page(
    engine: Engine, tmp_path: Path, project: Project
) -> None:
    demo = init_demo(tmp_path, project.image)
    assert (demo.root / "shipit.toml").read_text().count('image = "demo"') == 1
    assert (demo.root / ".github" / "workflows" / "shipit.yml").is_file()

    first_png = tmp_path / "first.png"
    first = run_with_screenshot(demo, first_png)
    assert first.code == 0, first.output
    report = json.loads(first.stdout)
    print(f"screenshot written to {first_png}")
    assert report["smoke"]["screenshot"] == {"path": str(first_png), "width": 800, "height": 600}
    with Image.open(first_png) as picture:
        assert picture.size == (800, 600)
        colours = picture.convert("RGB").getcolors(maxcolors=100_000)
        assert colours is not None and len(colours) > 10  # text and logo, not a blank page

    data = demo.root / "site" / "site.toml"
    data.write_text(data.read_text().replace("Shipped, smoke-tested, verified", "A new title"))
    second_png = tmp_path / "second.png"
    second = run_with_screenshot(demo, second_png)
    assert second.code == 0, second.output
    with Image.open(first_png) as before, Image.open(second_png) as after:
        assert ImageChops.difference(before.convert("RGB"), after.convert("RGB")).getbbox()
    assert demo.shipit("stop").code == 0
    assert shipit_containers(project.image) == []


def test_without_chromium_the_smoke_test_still_runs(engine: Engine, project: Project) -> None:
    png = project.root / "page.png"
    result = project.shipit(
        "run",
        "--port",
        str(free_port()),
        "--screenshot",
        str(png),
        "--json",
        env=project.env(SHIPIT_CHROMIUM="no-such-chromium"),
    )
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["smoke"]["ok"] is True
    assert "Chromium is not installed" in report["smoke"]["screenshot"]["error"]
    assert "apt-get install chromium" in result.stderr
    assert not png.exists()


def test_init_refuses_to_overwrite(tmp_path: Path, project: Project) -> None:
    demo = init_demo(tmp_path, project.image)
    again = demo.shipit("init", str(demo.root))
    assert again.code == ExitCode.PRECONDITION
    assert "--force" in again.stderr
    assert demo.shipit("init", str(demo.root), "--force", "--install", PINNED_INSTALL).code == 0


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        if getattr(command, "commands", None):
            found.extend(_commands(command, (*prefix, name)))
        else:
            found.append((*prefix, name))
    return found


def test_every_command_has_help_with_an_example() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {("init",), ("ship",), ("push",), ("doctor",), ("iam", "check")} <= set(commands)
    for command in commands:
        completed = subprocess.run(
            [sys.executable, "-m", "shipit", *command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert completed.returncode == 0, command
        assert "Example: shipit " in completed.stdout, command


def _entry(argument: str, columns: int) -> list[str]:
    """Output lines of the console script, then which heavy modules it imported."""
    probe = (
        f"import sys; sys.argv = ['shipit', '{argument}']; import shipit.entry as e; e.main(); "
        "print('typer' in sys.modules, 'docker' in sys.modules, 'boto3' in sys.modules)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    return completed.stdout.splitlines()


def _typer_help(columns: int) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", "from shipit.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    return completed.stdout


def test_version_answers_without_importing_typer() -> None:
    assert _entry("--version", 80) == [f"shipit {__version__}", "False False False"]


def test_stored_help_is_what_typer_prints() -> None:
    stored = Path(entry.HELP_FILE).read_text(encoding="utf-8")
    for columns in (80, 200):
        assert _typer_help(columns) == stored, "shipit/help.txt is stale: run `make help`"


def test_help_answers_from_the_stored_text_without_importing_typer() -> None:
    stored = Path(entry.HELP_FILE).read_text(encoding="utf-8").splitlines()
    assert "Commands:" in stored
    assert _entry("--help", 120) == [*stored, "False False False"]


def test_help_on_a_narrow_terminal_comes_from_typer() -> None:
    narrow = _entry("--help", 60)
    assert narrow[-1] == "True False False"
    assert narrow[:-1] == _typer_help(60).splitlines()
    assert max(len(line) for line in narrow[:-1]) <= 60


def test_a_closed_stdout_ends_quietly_with_141(project: Project) -> None:
    """`shipit config --json | head -0`: the reader is gone before shipit writes."""
    for command in (["--version"], ["config", "--json"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "shipit", *command],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                env=project.env(),
                check=False,
            )
        finally:
            os.close(write_end)
        assert completed.returncode == ExitCode.BROKEN_PIPE, (command, completed.stderr)
        assert completed.stderr == "", command
