"""What the commands of the CLI share: the options several commands take, loading the settings,
and the Ui the running command prints through (cli.main reports its errors through the same
one, so an error honours the command's --json and --quiet).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shipit.ui import Ui

if TYPE_CHECKING:
    from shipit.config import Settings
    from shipit.registries.catalog import RegistrySpec

_ui = Ui()


def ui() -> Ui:
    """The Ui the running command chose (before one did: plain output, no --json)."""
    return _ui


def use_ui(chosen: Ui) -> None:
    global _ui  # noqa: PLW0603 - main() reports errors through the Ui the command chose
    _ui = chosen


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")]
DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks (secrets stay hidden).")
]
ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project",
        "-C",
        envvar="SHIPIT_PROJECT",
        help="Project folder with site/ and templates/.",
        file_okay=False,
    ),
]
ImageOption = Annotated[
    str | None, typer.Option("--image", help="Local image name (SHIPIT_IMAGE).")
]
BaseImageOption = Annotated[
    str | None, typer.Option("--base-image", help="Nginx base image (SHIPIT_BASE_IMAGE).")
]
ScreenshotOption = Annotated[
    Path | None,
    typer.Option("--screenshot", help="Write a PNG of the served page (headless Chromium)."),
]
WindowOption = Annotated[
    str, typer.Option("--window", help="Screenshot window size, WIDTHxHEIGHT.")
]
ToOption = Annotated[
    str | None,
    typer.Option(
        "--to",
        help="Registries to push to: names separated by commas (ecr, dockerhub and each "
        "[[registries]] name in shipit.toml) or all; default: the `to` setting, else every "
        "registry with a repository set.",
    ),
]
TagOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        help="Tag template, repeatable; replaces the tags setting (SHIPIT_TAGS). "
        "Placeholders: {sha} {sha_long} {branch} {version} {major} {minor} {patch} {date}.",
    ),
]
PlatformOption = Annotated[
    list[str] | None,
    typer.Option(
        "--platform",
        help="Platform to build, os/arch[/variant] as docker spells it; repeatable or "
        "comma-separated (linux/amd64,linux/arm64), or all: every platform the base image "
        "offers; default: the platforms setting (SHIPIT_PLATFORMS), else the engine's own.",
    ),
]
ServePlatformOption = Annotated[
    list[str] | None,
    typer.Option(
        "--platform",
        help="Platform to serve, os/arch[/variant] (linux/arm64); default: the engine's own "
        "when the platforms setting names it, else the setting's first.",
    ),
]
AllowRootOption = Annotated[
    bool, typer.Option("--allow-root", help="Push even with the AWS account's root user.")
]
NoCacheOption = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Ask AWS for the ECR token and repository instead of reusing the cached ones "
        "(SHIPIT_ECR_CACHE=off).",
    ),
]


def setup(
    json_output: bool,
    quiet: bool,
    debug: bool,
    project: Path,
    *,
    step_command: str | None = None,
    **overrides: Any,
) -> Settings:
    global _ui  # noqa: PLW0603 - main() reports errors through the Ui the command chose
    # The step command is set before the settings load: their error gets a step summary too.
    _ui = Ui(json_output=json_output, quiet=quiet, debug=debug, step_command=step_command)
    from shipit.config import load_settings

    return load_settings(project, overrides)


def selected_registries(
    settings: Settings, to: str | None, *, allow_none: bool = False
) -> tuple[RegistrySpec, ...]:
    """--to (else the `to` setting), read once against the configured registries (an
    unknown name, or no registry at all, is exit 3)."""
    from shipit.registries.catalog import select_registries

    return select_registries(settings, to, allow_none=allow_none)


def publish_setup(
    command: str,
    to: str | None,
    tag: list[str] | None,
    no_cache: bool,
    json_output: bool,
    quiet: bool,
    debug: bool,
    project: Path,
    **overrides: Any,
) -> tuple[Settings, tuple[RegistrySpec, ...]]:
    """The settings of a push or a ship (its tags and token cache as the flags say), and the
    registries it goes to."""
    settings = setup(
        json_output,
        quiet,
        debug,
        project,
        tags=tag or None,
        ecr_cache="off" if no_cache else None,
        step_command=command,
        **overrides,
    )
    return settings, selected_registries(settings, to)
