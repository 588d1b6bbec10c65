"""The shipit command line: parses options, calls one pipeline function, prints the result.

Heavy modules (docker, boto3) are imported inside the commands that need them, so that
`shipit --help` and `shipit --version` start fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# typer 0.26+ carries its own click; this is the error its no_args_is_help raises.
from typer._click.exceptions import NoArgsIsHelpError

from shipit import __version__
from shipit.ci_kind import Ci
from shipit.cli_common import (
    BaseImageOption,
    CommonOptions,
    CrawlTimeoutOption,
    ImageOption,
    OutputOptions,
    PlatformOption,
    PublishOptions,
    ScreenshotOption,
    ServePlatformOption,
    WindowOption,
    publish_setup,
    selected_registries,
    setup,
    ui,
    use_ui,
    with_options,
)
from shipit.cli_iam import iam_app
from shipit.cli_verify import verify
from shipit.digests import short_id
from shipit.errors import ExitCode, OutputClosed, ShipitError, UsageError
from shipit.helptext import HELP_WIDTH
from shipit.interrupts import error_for
from shipit.tables import doctor_table, push_table, setting_text, smoke_table
from shipit.ui import Ui

if TYPE_CHECKING:
    from shipit.config import Settings
    from shipit.engine import Engine
    from shipit.pipeline import ScreenshotRequest
    from shipit.push import PushReport
    from shipit.smoke import SmokeReport

app = typer.Typer(
    name="shipit",
    help="Ship a static web site as a smoke-tested Nginx image to AWS ECR and Docker Hub.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _engine(settings: Settings) -> Engine:
    from shipit.engine import Engine

    return Engine.connect(settings.engine_timeout)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"shipit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Render, build, run, smoke-test and push a static site as an Nginx image.

    Example: shipit ship
    """


@app.command()
@with_options(CommonOptions)
def render(
    common: CommonOptions,
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the build context to.")
    ] = Path(".shipit/context"),
) -> None:
    """Render the pages, Dockerfile and nginx.conf into a build context. No Docker needed.

    Example: shipit render --out /tmp/context
    """
    settings = setup(common)
    from shipit.pipeline import render as render_stage

    site = render_stage(settings, out, ui().progress)
    ui().result(
        {
            "ok": True,
            "out": str(out),
            "pages": list(site.pages),
            "files": list(site.files),
            "build_id": site.build_id,
            "context_digest": site.context_digest,
            "assets": dict(site.assets),
            "precompressed": site.precompressed,
        },
        f"rendered {len(site.pages)} pages and {len(site.files)} files into {out} "
        f"({len(site.assets)} fingerprinted, {site.precompressed} .gz)\n"
        f"build id {site.build_id}, context sha256:{site.context_digest}",
    )


@app.command()
@with_options(CommonOptions)
def build(
    common: CommonOptions,
    base_image: BaseImageOption = None,
    image: ImageOption = None,
    platform: PlatformOption = None,
) -> None:
    """Render and build the image; does nothing when nothing changed.

    Example: shipit build --base-image nginx:1.27.3-bookworm
    """
    platforms = platform or None
    settings = setup(common, base_image=base_image, image=image, platforms=platforms)
    from shipit.pipeline import build as build_stage

    result = build_stage(settings, _engine(settings), ui().progress)
    verb = "built" if result.built else "unchanged, reused"
    ui().result(
        {"ok": True, **result.to_json()},
        f"{verb} {short_id(result.image_id)} as {', '.join(result.tags)} "
        f"(build id {result.build_id}, {result.seconds:.1f} s)",
    )


def _screenshot_request(path: Path | None, window: str) -> ScreenshotRequest | None:
    if path is None:
        return None
    from shipit.pipeline import ScreenshotRequest
    from shipit.screenshot import parse_window

    return ScreenshotRequest(path=path, window=parse_window(window))


@app.command()
@with_options(OutputOptions)
def init(
    output: OutputOptions,
    directory: Annotated[Path, typer.Argument(help="Folder for the new site.")] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files that already exist.")
    ] = False,
    ci: Annotated[
        Ci,
        typer.Option("--ci", help="CI definition to write: github, gitlab or none."),
    ] = Ci.GITHUB,
    install: Annotated[
        str | None,
        typer.Option(
            "--install",
            envvar="SHIPIT_INSTALL",
            help="How CI installs shipit, pinned: git+https://HOST/OWNER/shipit@COMMIT or "
            "shipit-site==VERSION (default: where this shipit came from).",
        ),
    ] = None,
) -> None:
    """Create a new site project (site data, templates, shipit.toml, CI definition).

    Example: shipit init demo && cd demo && shipit run --screenshot page.png
    """
    use_ui(output.ui())
    from shipit.scaffold import init_project

    made = init_project(directory, force=force, ci=ci, install=install)
    for note in made.notes:
        ui().progress(f"shipit: note: {note}")
    ui().result(
        {"ok": True, "directory": str(directory), "files": made.files, "notes": made.notes},
        f"created {len(made.files)} files in {directory}; next: cd {directory} && shipit run",
    )


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """Where `run` serves the site and how long it waits for it: settings, as the flags say."""

    port: Annotated[int | None, typer.Option("--port", help="Host port (SHIPIT_PORT).")] = None
    host: Annotated[str | None, typer.Option("--host", help="Host address (SHIPIT_HOST).")] = None
    reach_host: Annotated[
        str | None,
        typer.Option(
            "--reach-host",
            help="Address where this machine reaches the site (SHIPIT_REACH_HOST).",
        ),
    ] = None
    ready_timeout: Annotated[
        float | None, typer.Option("--ready-timeout", help="Seconds to wait for the site.")
    ] = None


@app.command()
@with_options(ServeOptions, CommonOptions)
def run(
    serve: ServeOptions,
    common: CommonOptions,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Skip the smoke test.")] = False,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Run with a read-only root file system.")
    ] = False,
    image: ImageOption = None,
    base_image: BaseImageOption = None,
    platform: ServePlatformOption = None,
    crawl_timeout: CrawlTimeoutOption = None,
    screenshot: ScreenshotOption = None,
    window: WindowOption = "1280x800",
) -> None:
    """Run the newest build on host:port, wait until it answers, smoke-test it, leave it running.

    Example: shipit run --port 8081 --screenshot page.png
    """
    settings = setup(
        common,
        **dataclasses.asdict(serve),
        image=image,
        base_image=base_image,
        crawl_timeout=crawl_timeout,
        platforms=platform or None,
    )
    if platform:
        settings.platforms.require_one("run", "--platform")
    from shipit.pipeline import run as run_stage

    result = run_stage(
        settings,
        _engine(settings),
        smoke=not no_smoke,
        read_only=read_only,
        screenshot_request=_screenshot_request(screenshot, window),
        progress=ui().progress,
    )
    human = f"serving {result.url} (container {result.container}, build {result.build_id})"
    if result.smoke is not None:
        human = smoke_table(ui(), result.smoke) + "\n" + human
    ui().result({"ok": True, **result.to_json()}, human)


@app.command()
@with_options(CommonOptions)
def smoke(
    common: CommonOptions,
    url: Annotated[
        str | None, typer.Argument(help="URL to test; default: the running container.")
    ] = None,
    image: ImageOption = None,
    crawl_timeout: CrawlTimeoutOption = None,
    screenshot: ScreenshotOption = None,
    window: WindowOption = "1280x800",
) -> None:
    """Smoke-test a served site over HTTP against the newest build.

    Example: shipit smoke http://127.0.0.1:8080
    """
    settings = setup(common, image=image, crawl_timeout=crawl_timeout)
    from shipit.errors import EngineError
    from shipit.pipeline import smoke as smoke_stage

    try:
        engine: Engine | None = _engine(settings)
    except EngineError:
        if url is None:
            raise
        engine = None
    report = smoke_stage(
        settings, url, engine, _screenshot_request(screenshot, window), ui().progress
    )
    ui().result(report.to_json(), smoke_table(ui(), report))
    if not report.ok:
        raise report.error("see the table above")


@app.command()
@with_options(CommonOptions)
def stop(
    common: CommonOptions,
    image: ImageOption = None,
) -> None:
    """Stop and remove this project's shipit container.

    Example: shipit stop
    """
    settings = setup(common, image=image)
    from shipit.pipeline import stop as stop_stage

    removed = stop_stage(settings, _engine(settings), ui().progress)
    ui().result(
        {"ok": True, "removed": removed},
        f"removed {', '.join(removed)}" if removed else "no shipit container was running",
    )


def _finish_push(
    report: PushReport, data: dict[str, Any] | None = None, smoke: SmokeReport | None = None
) -> None:
    """Prints the push (after the smoke test's table, for a ship), writes what CI reads,
    then fails as the push did."""
    table = push_table(ui(), report)
    if smoke is not None:
        table = smoke_table(ui(), smoke) + "\n" + table
    ui().push_result(report.to_json() if data is None else data, table, report)
    failure = report.failure()
    if failure is not None:
        raise failure


@app.command()
@with_options(PublishOptions, CommonOptions)
def push(
    publish: PublishOptions,
    common: CommonOptions,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    skip_smoke: Annotated[
        bool,
        typer.Option("--skip-smoke", help="Push even if the image has not passed a smoke test."),
    ] = False,
    image: ImageOption = None,
    platform: PlatformOption = None,
) -> None:
    """Push the smoke-tested image to ECR and Docker Hub, concurrently, and verify the digests.

    With -q, stdout holds one REGISTRY/REPO@DIGEST line per registry that serves the image;
    with -q --dry-run, one "REGISTRY/REPO:TAG (dry run)" line per reference it would push
    (the digest is known only once a registry has the image).

    Example: shipit push --to dockerhub --dry-run
    """
    settings, selected = publish_setup(
        "push", common, publish, image=image, platforms=platform or None
    )
    from shipit.ship import push as push_stage

    report = push_stage(
        settings,
        _engine(settings),
        selected,
        dry_run=dry_run,
        skip_smoke=skip_smoke,
        allow_root=publish.allow_root,
        progress=ui().progress,
        layer_progress=ui().layer_progress,
    )
    _finish_push(report)


@app.command()
@with_options(PublishOptions, CommonOptions)
def ship(
    publish: PublishOptions,
    common: CommonOptions,
    base_image: BaseImageOption = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Host port for the smoke test.")
    ] = None,
    image: ImageOption = None,
    platform: PlatformOption = None,
    crawl_timeout: CrawlTimeoutOption = None,
    resmoke: Annotated[
        bool,
        typer.Option(
            "--resmoke",
            help="Run and smoke-test the image even if this very image passed here before.",
        ),
    ] = False,
) -> None:
    """Build, run, smoke-test, push and stop: the whole way, pushing only a verified image.

    An image that already passed its smoke test on this machine (same image id, same
    shipit version, recorded in .shipit/state.json) is not run again unless --resmoke.

    Example: shipit ship --to ecr,dockerhub
    """
    settings, selected = publish_setup(
        "ship",
        common,
        publish,
        base_image=base_image,
        port=port,
        image=image,
        platforms=platform or None,
        crawl_timeout=crawl_timeout,
    )
    from shipit.ship import ship as ship_stage

    result = ship_stage(
        settings,
        _engine(settings),
        to=selected,
        allow_root=publish.allow_root,
        resmoke=resmoke,
        progress=ui().progress,
        layer_progress=ui().layer_progress,
    )
    _finish_push(result.push, result.to_json(), result.run.smoke if result.run else None)


@app.command("config")
@with_options(CommonOptions)
def show_config(
    common: CommonOptions,
) -> None:
    """Show the effective settings and where each one came from.

    Example: shipit config --json
    """
    settings = setup(common)
    values = settings.as_dict()
    rows = [
        (name, setting_text(value), settings.origins.get(name, ""))
        for name, value in values.items()
    ]
    ui().result(
        {"ok": True, "settings": values, "origins": dict(settings.origins)},
        ui().table("shipit settings", ("setting", "value", "from"), rows),
    )


@app.command()
@with_options(CommonOptions)
def doctor(
    common: CommonOptions,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also ask IAM to simulate the push's actions for the caller "
            "(needs iam:SimulatePrincipalPolicy) and log in to Docker Hub.",
        ),
    ] = False,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Registries to check: names separated by commas or all; default: as push.",
        ),
    ] = None,
    base_image: BaseImageOption = None,
    image: ImageOption = None,
) -> None:
    """Check what a ship needs: engine, base image, templates, AWS, ECR and Docker Hub.

    Exits 15 when a check fails; warnings do not fail. Example: shipit doctor --online
    """
    settings = setup(common, base_image=base_image, image=image)
    from shipit.doctor import diagnose

    report = diagnose(
        settings,
        to=selected_registries(settings, to, allow_none=True),
        online=online,
        progress=ui().progress,
    )
    ui().result(report.to_json(), doctor_table(ui(), report))
    failure = report.failure()
    if failure is not None:
        raise failure


app.add_typer(iam_app)
app.command("verify")(verify)


def top_level_help() -> str:
    """What `shipit --help` prints on a terminal of 80 columns or more (see entry.py)."""
    command = typer.main.get_command(app)
    # Click's formatter: min(terminal width, 80) - 2 columns.
    context = command.make_context(
        "shipit", [], resilient_parsing=True, terminal_width=HELP_WIDTH - 2
    )
    with context:
        return context.get_help() + "\n"


def _wants_json(argv: list[str]) -> bool:
    """--json among the options: a usage error, found before any command ran, is JSON too."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


# The commands that leave GitHub's step files (what they pushed, or what failed).
STEP_COMMANDS = frozenset({"push", "ship"})


def _step_command(argv: list[str]) -> str | None:
    """push or ship when it is the command: a usage error in its options gets a summary."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return command if command in STEP_COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Errors before a command chose its Ui still honour --json.
    use_ui(Ui(json_output=_wants_json(argv), step_command=_step_command(argv)))
    command = typer.main.get_command(app)
    try:
        returned = command.main(args=argv, prog_name="shipit", standalone_mode=False)
        # Typer turns Ctrl-C into a returned 130 when it does not own the exit.
        if returned == ExitCode.INTERRUPTED:
            raise KeyboardInterrupt
        ui().finish()
    except NoArgsIsHelpError as missing:
        # `shipit` or `shipit iam` alone: the help, as git prints it, on stdout; still a
        # usage error (2) for a script that forgot the command.
        sys.stdout.write(missing.ctx.get_help() + "\n")
        return int(ExitCode.USAGE)
    except ShipitError as error:
        if not isinstance(error, OutputClosed):
            ui().error(error)
        return int(error.exit_code)
    except (KeyboardInterrupt, typer.Abort) as stopped:
        interrupted = error_for(stopped, "containers this command started were removed")
        ui().error(interrupted)
        if threading.active_count() > 1:
            # Push threads may be blocked in the engine's stream; exiting normally would
            # join them. Ending the process closes their connections, which cancels them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(interrupted.exit_code))
        return int(interrupted.exit_code)
    except typer.Exit as exit_:
        return int(exit_.exit_code)
    except typer.exceptions.TyperException as error:
        ui().error(UsageError(error.format_message(), "see shipit --help"))
        return int(ExitCode.USAGE)
    except Exception as error:  # noqa: BLE001 - the last net: one line, not a traceback
        ui().internal_error(error)
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)
