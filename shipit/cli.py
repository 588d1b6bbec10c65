"""The shipit command line: parses options, calls one pipeline function, prints the result.

Heavy modules (docker, boto3) are imported inside the commands that need them, so that
`shipit --help` and `shipit --version` start fast.
"""

from __future__ import annotations

import json
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
from shipit.errors import ExitCode, OutputClosed, ShipitError, UsageError
from shipit.helptext import HELP_WIDTH
from shipit.interrupts import error_for
from shipit.ui import Ui

if TYPE_CHECKING:
    from shipit.config import Settings
    from shipit.doctor import DoctorReport
    from shipit.engine import Engine
    from shipit.iam.access import CheckReport
    from shipit.pipeline import ScreenshotRequest
    from shipit.push import PushReport
    from shipit.registries.catalog import RegistrySpec
    from shipit.smoke import SmokeReport

app = typer.Typer(
    name="shipit",
    help="Ship a static web site as a smoke-tested Nginx image to AWS ECR and Docker Hub.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_ui = Ui()

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")]
DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks (secrets stay hidden).")
]
ImageOption = Annotated[
    str | None, typer.Option("--image", help="Local image name (SHIPIT_IMAGE).")
]
BaseImageOption = Annotated[
    str | None, typer.Option("--base-image", help="Nginx base image (SHIPIT_BASE_IMAGE).")
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


def _setup(
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
def render(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the build context to.")
    ] = Path(".shipit/context"),
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Render the pages, Dockerfile and nginx.conf into a build context. No Docker needed.

    Example: shipit render --out /tmp/context
    """
    settings = _setup(json_output, quiet, debug, project)
    from shipit.pipeline import render as render_stage

    site = render_stage(settings, out, _ui.progress)
    _ui.result(
        {
            "ok": True,
            "out": str(out),
            "pages": list(site.pages),
            "files": list(site.files),
            "build_id": site.build_id,
            "context_digest": site.context_digest,
        },
        f"rendered {len(site.pages)} pages and {len(site.files)} files into {out}\n"
        f"build id {site.build_id}, context sha256:{site.context_digest}",
    )


@app.command()
def build(
    base_image: BaseImageOption = None,
    image: ImageOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Render and build the image; does nothing when nothing changed.

    Example: shipit build --base-image nginx:1.27.3-bookworm
    """
    settings = _setup(json_output, quiet, debug, project, base_image=base_image, image=image)
    from shipit.pipeline import build as build_stage

    result = build_stage(settings, _engine(settings), _ui.progress)
    verb = "built" if result.built else "unchanged, reused"
    _ui.result(
        {"ok": True, **result.to_json()},
        f"{verb} {result.image_id[7:19]} as {', '.join(result.tags)} "
        f"(build id {result.build_id}, {result.seconds:.1f} s)",
    )


ScreenshotOption = Annotated[
    Path | None,
    typer.Option("--screenshot", help="Write a PNG of the served page (headless Chromium)."),
]
WindowOption = Annotated[
    str, typer.Option("--window", help="Screenshot window size, WIDTHxHEIGHT.")
]


def _screenshot_request(path: Path | None, window: str) -> ScreenshotRequest | None:
    if path is None:
        return None
    from shipit.pipeline import ScreenshotRequest
    from shipit.screenshot import parse_window

    return ScreenshotRequest(path=path, window=parse_window(window))


@app.command()
def init(
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
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Create a new site project (site data, templates, shipit.toml, CI definition).

    Example: shipit init demo && cd demo && shipit run --screenshot page.png
    """
    global _ui  # noqa: PLW0603 - main() reports errors through the Ui the command chose
    _ui = Ui(json_output=json_output, quiet=quiet, debug=debug)
    from shipit.scaffold import init_project

    made = init_project(directory, force=force, ci=ci, install=install)
    for note in made.notes:
        _ui.progress(f"shipit: note: {note}")
    _ui.result(
        {"ok": True, "directory": str(directory), "files": made.files, "notes": made.notes},
        f"created {len(made.files)} files in {directory}; next: cd {directory} && shipit run",
    )


def _smoke_table(report: SmokeReport) -> str:
    rows = [("ok" if check.ok else "FAIL", check.name, check.detail) for check in report.checks]
    if report.screenshot is not None:
        shot = report.screenshot
        detail = (
            f"{shot['path']} ({shot['width']}x{shot['height']})"
            if "error" not in shot
            else f"not taken: {shot['error']}"
        )
        rows.append(("ok" if "error" not in shot else "warn", "screenshot", detail))
    return _ui.table(f"smoke test of {report.url}", ("result", "check", "detail"), rows)


@app.command()
def run(
    port: Annotated[int | None, typer.Option("--port", help="Host port (SHIPIT_PORT).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Host address (SHIPIT_HOST).")] = None,
    reach_host: Annotated[
        str | None,
        typer.Option(
            "--reach-host",
            help="Address where this machine reaches the site (SHIPIT_REACH_HOST).",
        ),
    ] = None,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Skip the smoke test.")] = False,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Run with a read-only root file system.")
    ] = False,
    image: ImageOption = None,
    base_image: BaseImageOption = None,
    ready_timeout: Annotated[
        float | None, typer.Option("--ready-timeout", help="Seconds to wait for the site.")
    ] = None,
    screenshot: ScreenshotOption = None,
    window: WindowOption = "1280x800",
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Run the newest build on host:port, wait until it answers, smoke-test it, leave it running.

    Example: shipit run --port 8081 --screenshot page.png
    """
    settings = _setup(
        json_output,
        quiet,
        debug,
        project,
        port=port,
        host=host,
        reach_host=reach_host,
        image=image,
        base_image=base_image,
        ready_timeout=ready_timeout,
    )
    from shipit.pipeline import run as run_stage

    result = run_stage(
        settings,
        _engine(settings),
        smoke=not no_smoke,
        read_only=read_only,
        screenshot_request=_screenshot_request(screenshot, window),
        progress=_ui.progress,
    )
    human = f"serving {result.url} (container {result.container}, build {result.build_id})"
    if result.smoke is not None:
        human = _smoke_table(result.smoke) + "\n" + human
    _ui.result({"ok": True, **result.to_json()}, human)


@app.command()
def smoke(
    url: Annotated[
        str | None, typer.Argument(help="URL to test; default: the running container.")
    ] = None,
    image: ImageOption = None,
    screenshot: ScreenshotOption = None,
    window: WindowOption = "1280x800",
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Smoke-test a served site over HTTP against the newest build.

    Example: shipit smoke http://127.0.0.1:8080
    """
    settings = _setup(json_output, quiet, debug, project, image=image)
    from shipit.errors import EngineError, SmokeError
    from shipit.pipeline import smoke as smoke_stage

    try:
        engine: Engine | None = _engine(settings)
    except EngineError:
        if url is None:
            raise
        engine = None
    report = smoke_stage(
        settings, url, engine, _screenshot_request(screenshot, window), _ui.progress
    )
    _ui.result(report.to_json(), _smoke_table(report))
    if not report.ok:
        raise SmokeError(
            "smoke test failed: " + ", ".join(check.name for check in report.failed),
            "see the table above",
        )


@app.command()
def stop(
    image: ImageOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Stop and remove this project's shipit container.

    Example: shipit stop
    """
    settings = _setup(json_output, quiet, debug, project, image=image)
    from shipit.pipeline import stop as stop_stage

    removed = stop_stage(settings, _engine(settings), _ui.progress)
    _ui.result(
        {"ok": True, "removed": removed},
        f"removed {', '.join(removed)}" if removed else "no shipit container was running",
    )


ToOption = Annotated[
    str | None,
    typer.Option(
        "--to",
        help="Registries to push to: names separated by commas (ecr, dockerhub and each "
        "[[registries]] name in shipit.toml) or all; default: the `to` setting, else every "
        "registry with a repository set.",
    ),
]


def _selected_registries(
    settings: Settings, to: str | None, *, allow_none: bool = False
) -> tuple[RegistrySpec, ...]:
    """--to (else the `to` setting), read once against the configured registries (an
    unknown name, or no registry at all, is exit 3)."""
    from shipit.registries.catalog import select_registries

    return select_registries(settings, to, allow_none=allow_none)


TagOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        help="Tag template, repeatable; replaces the tags setting (SHIPIT_TAGS). "
        "Placeholders: {sha} {sha_long} {branch} {version} {major} {minor} {patch} {date}.",
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


def _cache_override(no_cache: bool) -> str | None:
    return "off" if no_cache else None


def _push_table(report: PushReport) -> str:
    rows = []
    for target in report.targets:
        tags = ", ".join(f"{tag.tag} {tag.status}" for tag in target.tags)
        outcome = target.status
        if target.error is not None:
            outcome += f": {target.error.one_line()}"
        rows.append(
            (
                target.name,
                target.reference or "-",
                target.digest or "-",
                tags or "-",
                f"{target.bytes_uploaded:,}",
                f"{target.seconds:.1f}",
                outcome,
            )
        )
    title = ("push plan" if report.dry_run else "push") + f" of {report.image_id[7:19]}"
    table = _ui.table(
        title, ("registry", "reference", "digest", "tags", "bytes", "s", "result"), rows
    )
    notes = [f"{target.name}: {note}" for target in report.targets for note in target.notes]
    return "\n".join([table, *notes])


def _finish_push(report: PushReport) -> None:
    _ui.push_result(report.to_json(), _push_table(report), report)
    failure = report.failure()
    if failure is not None:
        raise failure


@app.command()
def push(
    to: ToOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    skip_smoke: Annotated[
        bool,
        typer.Option("--skip-smoke", help="Push even if the image has not passed a smoke test."),
    ] = False,
    allow_root: AllowRootOption = False,
    no_cache: NoCacheOption = False,
    tag: TagOption = None,
    image: ImageOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Push the smoke-tested image to ECR and Docker Hub, concurrently, and verify the digests.

    With -q, stdout holds one REGISTRY/REPO@DIGEST line per registry that serves the image;
    with -q --dry-run, one "REGISTRY/REPO:TAG (dry run)" line per reference it would push
    (the digest is known only once a registry has the image).

    Example: shipit push --to dockerhub --dry-run
    """
    settings = _setup(
        json_output,
        quiet,
        debug,
        project,
        image=image,
        tags=tag or None,
        ecr_cache=_cache_override(no_cache),
        step_command="push",
    )
    from shipit.pipeline import push as push_stage

    selected = _selected_registries(settings, to)
    report = push_stage(
        settings,
        _engine(settings),
        selected,
        dry_run=dry_run,
        skip_smoke=skip_smoke,
        allow_root=allow_root,
        progress=_ui.progress,
        layer_progress=_ui.layer_progress,
    )
    _finish_push(report)


@app.command()
def ship(
    to: ToOption = None,
    allow_root: AllowRootOption = False,
    no_cache: NoCacheOption = False,
    tag: TagOption = None,
    base_image: BaseImageOption = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Host port for the smoke test.")
    ] = None,
    image: ImageOption = None,
    resmoke: Annotated[
        bool,
        typer.Option(
            "--resmoke",
            help="Run and smoke-test the image even if this very image passed here before.",
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Build, run, smoke-test, push and stop: the whole way, pushing only a verified image.

    An image that already passed its smoke test on this machine (same image id, same
    shipit version, recorded in .shipit/state.json) is not run again unless --resmoke.

    Example: shipit ship --to ecr,dockerhub
    """
    settings = _setup(
        json_output,
        quiet,
        debug,
        project,
        base_image=base_image,
        port=port,
        image=image,
        tags=tag or None,
        ecr_cache=_cache_override(no_cache),
        step_command="ship",
    )
    from shipit.pipeline import ship as ship_stage

    selected = _selected_registries(settings, to)
    result = ship_stage(
        settings,
        _engine(settings),
        to=selected,
        allow_root=allow_root,
        resmoke=resmoke,
        progress=_ui.progress,
        layer_progress=_ui.layer_progress,
    )
    smoke_report = result.run.smoke if result.run else None
    _ui.push_result(
        result.to_json(),
        _smoke_table(smoke_report) + "\n" + _push_table(result.push)
        if smoke_report
        else _push_table(result.push),
        result.push,
    )
    failure = result.push.failure()
    if failure is not None:
        raise failure


def _setting_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, list):  # [[registries]] tables
        return ", ".join(f"{entry['name']} = {entry['repository']}" for entry in value)
    return str(value)


@app.command("config")
def show_config(
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Show the effective settings and where each one came from.

    Example: shipit config --json
    """
    settings = _setup(json_output, quiet, debug, project)
    values = settings.as_dict()
    rows = [
        (name, _setting_text(value), settings.origins.get(name, ""))
        for name, value in values.items()
    ]
    _ui.result(
        {"ok": True, "settings": values, "origins": dict(settings.origins)},
        _ui.table("shipit settings", ("setting", "value", "from"), rows),
    )


def _doctor_table(report: DoctorReport) -> str:
    marks = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    rows = [(marks[check.outcome], check.name, check.one_line()) for check in report.checks]
    return _ui.table("shipit doctor", ("result", "check", "detail"), rows)


@app.command()
def doctor(
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
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Check what a ship needs: engine, base image, templates, AWS, ECR and Docker Hub.

    Exits 15 when a check fails; warnings do not fail. Example: shipit doctor --online
    """
    settings = _setup(json_output, quiet, debug, project, base_image=base_image, image=image)
    from shipit.doctor import diagnose

    report = diagnose(
        settings,
        to=_selected_registries(settings, to, allow_none=True),
        online=online,
        progress=_ui.progress,
    )
    _ui.result(report.to_json(), _doctor_table(report))
    failure = report.failure()
    if failure is not None:
        raise failure


iam_app = typer.Typer(
    name="iam",
    help="The least-privilege IAM policy for shipit's push, and checks of policies against it.",
    no_args_is_help=True,
)
app.add_typer(iam_app)

AccountOption = Annotated[
    str | None,
    typer.Option("--account", help="12-digit AWS account id (default: the caller's, from STS)."),
]
RegionOption = Annotated[
    str | None, typer.Option("--region", help="AWS region (default: AWS_REGION / aws_region).")
]
RepositoryOption = Annotated[
    str | None,
    typer.Option("--repository", help="ECR repository name (default: ecr_repository)."),
]
DescribeImagesOption = Annotated[
    bool,
    typer.Option(
        "--describe-images",
        help="Also grant ecr:DescribeImages, for tools beside shipit that list images.",
    ),
]


@iam_app.command("policy")
def iam_policy(
    account: AccountOption = None,
    region: RegionOption = None,
    repository: RepositoryOption = None,
    describe_images: DescribeImagesOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Print the least-privilege IAM identity policy for shipit's push, as JSON.

    stdout is always the policy document itself, with or without --json.
    Example: shipit iam policy --account 123456789012 > shipit-push.json
    """
    settings = _setup(json_output, quiet, debug, project)
    from shipit.iam.access import resolve_scope

    scope = resolve_scope(
        settings,
        account=account,
        region=region,
        repository=repository,
        describe_images=describe_images,
        progress=_ui.progress,
    )
    document = scope.policy()
    _ui.result(document, json.dumps(document, indent=2))


def _check_table(report: CheckReport) -> str:
    from shipit.iam.access import VERDICT_LABELS

    rows = [
        (
            VERDICT_LABELS[decision.decision],
            decision.action,
            decision.resource,
            "; ".join(f"{c.test.operator} {c.test.key}" for c in decision.conditions) or "-",
            decision.reason,
        )
        for decision in report.decisions
    ]
    title = "IAM check of " + ", ".join(report.policies)
    return _ui.table(title, ("result", "action", "resource", "condition", "why"), rows)


@iam_app.command("check")
def iam_check(
    policy: Annotated[
        list[Path],
        typer.Option(
            "--policy",
            help="Identity policy JSON file; repeat it for several policies of one identity "
            "(/dev/stdin reads a pipe).",
            dir_okay=False,
        ),
    ],
    action: Annotated[
        list[str] | None,
        typer.Option("--action", help="Action to check, e.g. ecr:PutImage; repeatable."),
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option(
            "--resource",
            help="Resource ARN or *: one per --action in the same order, or one for all; "
            "default: the resource shipit performs that action on.",
        ),
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            help="Request context KEY=VALUE (e.g. aws:username=alice), repeatable; a key "
            "given twice has two values. With it, Conditions and policy variables are "
            "judged and any key not given is absent from the request.",
        ),
    ] = None,
    account: AccountOption = None,
    region: RegionOption = None,
    repository: RepositoryOption = None,
    describe_images: DescribeImagesOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Evaluate policies locally: would they allow shipit's push (or the given actions)?

    Exits 0 only when every action is allowed, 13 otherwise (denied, conditional or
    undecided); a statement whose Condition needs the request counts as allowed only when
    --context says it holds, and one whose Resource is not a well-formed ARN never does.
    Example: shipit iam check --policy ci-role.json --context aws:MultiFactorAuthPresent=true
    """
    settings = _setup(json_output, quiet, debug, project)
    from shipit.iam.access import check_policies

    report = check_policies(
        settings,
        policy,
        action or (),
        resource or (),
        account=account,
        region=region,
        repository=repository,
        describe_images=describe_images,
        context=context or (),
        progress=_ui.progress,
    )
    _ui.result(report.to_json(), _check_table(report))
    failure = report.failure()
    if failure is not None:
        raise failure


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
    global _ui  # noqa: PLW0603 - errors before a command chose its Ui still honour --json
    argv = sys.argv[1:] if argv is None else argv
    _ui = Ui(json_output=_wants_json(argv), step_command=_step_command(argv))
    command = typer.main.get_command(app)
    try:
        returned = command.main(args=argv, prog_name="shipit", standalone_mode=False)
        # Typer turns Ctrl-C into a returned 130 when it does not own the exit.
        if returned == ExitCode.INTERRUPTED:
            raise KeyboardInterrupt
        _ui.finish()
    except NoArgsIsHelpError as missing:
        # `shipit` or `shipit iam` alone: the help, as git prints it, on stdout; still a
        # usage error (2) for a script that forgot the command.
        sys.stdout.write(missing.ctx.get_help() + "\n")
        return int(ExitCode.USAGE)
    except ShipitError as error:
        if not isinstance(error, OutputClosed):
            _ui.error(error)
        return int(error.exit_code)
    except (KeyboardInterrupt, typer.Abort) as stopped:
        interrupted = error_for(stopped, "containers this command started were removed")
        _ui.error(interrupted)
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
        _ui.error(UsageError(error.format_message(), "see shipit --help"))
        return int(ExitCode.USAGE)
    except Exception as error:  # noqa: BLE001 - the last net: one line, not a traceback
        _ui.internal_error(error)
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)
