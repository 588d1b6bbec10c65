"""`shipit iam`: the least-privilege IAM policy for shipit's push (`iam policy`), and checks of
policies against it (`iam check`). Parses and prints only, as cli.py does; shipit/iam/ decides.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from shipit.cli_common import CommonOptions, setup, ui, with_options
from shipit.tables import check_table

iam_app = typer.Typer(
    name="iam",
    help="The least-privilege IAM policy for shipit's push, and checks of policies against it.",
    no_args_is_help=True,
)

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


@dataclasses.dataclass(frozen=True)
class ScopeOptions:
    """The repository a policy is for: what `iam policy` and `iam check` share."""

    account: AccountOption = None
    region: RegionOption = None
    repository: RepositoryOption = None
    describe_images: DescribeImagesOption = False


@iam_app.command("policy")
@with_options(ScopeOptions, CommonOptions)
def iam_policy(scope_options: ScopeOptions, common: CommonOptions) -> None:
    """Print the least-privilege IAM identity policy for shipit's push, as JSON.

    stdout is always the policy document itself, with or without --json.
    Example: shipit iam policy --account 123456789012 > shipit-push.json
    """
    settings = setup(common)
    from shipit.iam.access import resolve_scope

    scope = resolve_scope(settings, **dataclasses.asdict(scope_options), progress=ui().progress)
    document = scope.policy()
    ui().result(document, json.dumps(document, indent=2))


@iam_app.command("check")
@with_options(ScopeOptions, CommonOptions)
def iam_check(
    scope_options: ScopeOptions,
    common: CommonOptions,
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
) -> None:
    """Evaluate policies locally: would they allow shipit's push (or the given actions)?

    Exits 0 only when every action is allowed, 13 otherwise (denied, conditional or
    undecided); a statement whose Condition needs the request counts as allowed only when
    --context says it holds, and one whose Resource is not a well-formed ARN never does.
    Example: shipit iam check --policy ci-role.json --context aws:MultiFactorAuthPresent=true
    """
    settings = setup(common)
    from shipit.iam.access import check_policies

    report = check_policies(
        settings,
        policy,
        action or (),
        resource or (),
        **dataclasses.asdict(scope_options),
        context=context or (),
        progress=ui().progress,
    )
    ui().result(report.to_json(), check_table(ui(), report))
    failure = report.failure()
    if failure is not None:
        raise failure
