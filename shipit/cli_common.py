"""What the commands of the CLI share: the options several commands take, loading the settings,
and the Ui the running command prints through (cli.main reports its errors through the same
one, so an error honours the command's --json and --quiet).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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
SigningKeyOption = Annotated[
    str | None,
    typer.Option(
        "--signing-key",
        help="Sign the image and its attestations with this key (SHIPIT_SIGNING_KEY): a PEM "
        "P-256 private key, a cosign.key or awskms:///ALIAS-OR-ARN.",
    ),
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

CrawlTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--crawl-timeout",
        help="Seconds the smoke test may crawl pages and assets (SHIPIT_CRAWL_TIMEOUT).",
    ),
]


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """How every command prints: --json, --quiet, --debug."""

    json_output: JsonOption = False
    quiet: QuietOption = False
    debug: DebugOption = False

    def ui(self, step_command: str | None = None) -> Ui:
        return Ui(
            json_output=self.json_output,
            quiet=self.quiet,
            debug=self.debug,
            step_command=step_command,
        )


@dataclasses.dataclass(frozen=True)
class CommonOptions(OutputOptions):
    """What every command that reads a project takes: the output options and --project."""

    project: ProjectOption = Path(".")


Command = TypeVar("Command", bound=Callable[..., None])


def with_options(*groups: type) -> Callable[[Command], Command]:
    """A Typer command whose first parameters are option groups (frozen dataclasses whose
    fields are Typer options), so the options several commands share are declared once: Typer
    sees each group's fields as options after the command's own, and the command receives
    one instance of each group."""

    def decorate(command: Command) -> Command:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[len(groups) :]
        shared = [
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=hint
            )
            for group in groups
            for field, hint in _fields_with_hints(group)
        ]

        @functools.wraps(command)
        def parsed(**values: Any) -> None:
            instances = [
                group(**{field.name: values.pop(field.name) for field in dataclasses.fields(group)})
                for group in groups
            ]
            command(*instances, **values)

        parameters = own + shared
        parsed.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
        parsed.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return typing.cast(Command, parsed)

    return decorate


def _fields_with_hints(group: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(group, include_extras=True)
    return [(field, hints[field.name]) for field in dataclasses.fields(group)]


def setup(
    common: CommonOptions,
    *,
    step_command: str | None = None,
    **overrides: Any,
) -> Settings:
    global _ui  # noqa: PLW0603 - main() reports errors through the Ui the command chose
    # The step command is set before the settings load: their error gets a step summary too.
    _ui = common.ui(step_command)
    from shipit.config import load_settings

    return load_settings(common.project, overrides)


def selected_registries(
    settings: Settings, to: str | None, *, allow_none: bool = False
) -> tuple[RegistrySpec, ...]:
    """--to (else the `to` setting), read once against the configured registries (an
    unknown name, or no registry at all, is exit 3)."""
    from shipit.registries.catalog import select_registries

    return select_registries(settings, to, allow_none=allow_none)


@dataclasses.dataclass(frozen=True)
class PublishOptions:
    """What push and ship share: where to, which tags, the token cache, the root user, the
    signing key."""

    to: ToOption = None
    tag: TagOption = None
    no_cache: NoCacheOption = False
    allow_root: AllowRootOption = False
    signing_key: SigningKeyOption = None


def publish_setup(
    command: str, common: CommonOptions, publish: PublishOptions, **overrides: Any
) -> tuple[Settings, tuple[RegistrySpec, ...]]:
    """The settings of a push or a ship (its tags and token cache as the flags say), and the
    registries it goes to."""
    settings = setup(
        common,
        tags=publish.tag or None,
        ecr_cache="off" if publish.no_cache else None,
        signing_key=publish.signing_key,
        step_command=command,
        **overrides,
    )
    return settings, selected_registries(settings, publish.to)
