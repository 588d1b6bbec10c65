"""`shipit iam policy` and `shipit iam check` as a user runs them: the CLI in a subprocess,
STS answered by a real moto_server over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.services import MOTO_ACCOUNT, MotoService
from shipit.errors import ExitCode
from tests.conftest import Project, Result

ACCOUNT = "210987654321"


@dataclass
class AwsProject(Project):
    """The example project with boto3 pointed at moto (and no other AWS settings)."""

    moto: MotoService | None = None

    def env(self, **extra: str) -> dict[str, str]:
        assert self.moto
        return super().env(**{**self.moto.env(), **extra})


@pytest.fixture
def aws_project(project: Project, moto: MotoService) -> AwsProject:
    return AwsProject(root=project.root, image=project.image, moto=moto)


def first_json(result: Result) -> dict[str, Any]:
    """The one document on stdout, with the error inside it on failure."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def error_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-1]


def write_policy(folder: Path, name: str, document: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(document, indent=2))
    return path


def repository_statement(policy: dict[str, Any]) -> dict[str, Any]:
    (statement,) = [s for s in policy["Statement"] if s["Resource"] != "*"]
    return statement


def test_printed_policy_is_json_that_passes_its_own_check(
    aws_project: Project, tmp_path: Path
) -> None:
    printed = aws_project.shipit("iam", "policy")
    assert printed.code == 0, printed.output
    policy = json.loads(printed.stdout)
    assert policy["Version"] == "2012-10-17"
    # The same document with --json: stdout is always usable as a policy file.
    assert json.loads(aws_project.shipit("iam", "policy", "--json").stdout) == policy

    policy_file = tmp_path / "push.json"
    policy_file.write_text(printed.stdout)
    checked = aws_project.shipit("iam", "check", "--policy", str(policy_file), "--json")
    assert checked.code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["ok"] is True
    assert report["policies"] == [str(policy_file)]
    decisions = {check["action"]: check for check in report["checks"]}
    assert set(decisions) == {
        "ecr:GetAuthorizationToken",
        *repository_statement(policy)["Action"],
    }
    assert {check["decision"] for check in decisions.values()} == {"allowed"}
    assert decisions["ecr:PutImage"]["statement"] == "ShipitPushToRepository"
    assert decisions["ecr:PutImage"]["source"] == str(policy_file)

    table = aws_project.shipit("iam", "check", "--policy", str(policy_file))
    assert table.code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if line.startswith("allowed ")]
    assert len(rows) == len(decisions)


def test_account_comes_from_sts_when_not_given(aws_project: Project) -> None:
    result = aws_project.shipit("iam", "policy")
    assert result.code == 0, result.output
    arn = repository_statement(json.loads(result.stdout))["Resource"]
    image_name = aws_project.image.rsplit("/", 1)[-1]
    assert arn == f"arn:aws:ecr:us-east-1:{MOTO_ACCOUNT}:repository/{image_name}"
    assert f"account {MOTO_ACCOUNT} from STS" in result.stderr


def test_flags_win_over_settings_and_sts(aws_project: Project) -> None:
    result = aws_project.shipit(
        "iam",
        "policy",
        "--account",
        ACCOUNT,
        "--region",
        "eu-west-3",
        "--repository",
        "team/site",
        env=aws_project.env(SHIPIT_ECR_REPOSITORY="not-this-one"),
    )
    assert result.code == 0, result.output
    arn = repository_statement(json.loads(result.stdout))["Resource"]
    assert arn == f"arn:aws:ecr:eu-west-3:{ACCOUNT}:repository/team/site"
    assert "STS" not in result.stderr


def test_china_region_gives_the_aws_cn_partition(project: Project) -> None:
    result = project.shipit("iam", "policy", "--account", ACCOUNT, "--region", "cn-north-1")
    assert result.code == 0, result.output
    arn = repository_statement(json.loads(result.stdout))["Resource"]
    assert arn.startswith(f"arn:aws-cn:ecr:cn-north-1:{ACCOUNT}:repository/")


def test_optional_actions_follow_the_settings(project: Project) -> None:
    base = ("iam", "policy", "--account", ACCOUNT, "--region", "us-east-1")
    default = repository_statement(json.loads(project.shipit(*base).stdout))["Action"]
    assert "ecr:DescribeRepositories" in default
    assert "ecr:CreateRepository" in default
    assert "ecr:DescribeImages" not in default

    no_create = project.shipit(*base, env=project.env(SHIPIT_ECR_CREATE_REPOSITORY="false"))
    actions = repository_statement(json.loads(no_create.stdout))["Action"]
    assert "ecr:CreateRepository" not in actions
    assert "ecr:DescribeRepositories" in actions

    with_images = project.shipit(*base, "--describe-images")
    assert "ecr:DescribeImages" in repository_statement(json.loads(with_images.stdout))["Action"]


@pytest.mark.parametrize("command", ["policy", "check"])
def test_an_account_id_that_is_not_12_digits_is_a_usage_error(
    project: Project, tmp_path: Path, command: str
) -> None:
    policy = write_policy(tmp_path, "p.json", {"Statement": []})
    extra = ("--policy", str(policy)) if command == "check" else ()
    result = project.shipit("iam", command, "--account", "1234", "--region", "us-east-1", *extra)
    assert result.code == ExitCode.USAGE, result.output
    assert "account id '1234' is not 12 digits" in error_line(result)
    assert result.stdout == ""


def test_no_region_anywhere_is_a_usage_error(project: Project) -> None:
    result = project.shipit("iam", "policy", "--account", ACCOUNT)
    assert result.code == ExitCode.USAGE, result.output
    assert "--region" in error_line(result)


def printed_policy(project: Project, *args: str) -> dict[str, Any]:
    result = project.shipit("iam", "policy", "--account", ACCOUNT, "--region", "us-east-1", *args)
    assert result.code == 0, result.output
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def check(project: Project, *args: str) -> Result:
    return project.shipit("iam", "check", "--account", ACCOUNT, "--region", "us-east-1", *args)


def test_a_policy_missing_one_action_exits_13_naming_it(project: Project, tmp_path: Path) -> None:
    policy = printed_policy(project)
    repository_statement(policy)["Action"].remove("ecr:InitiateLayerUpload")
    path = write_policy(tmp_path, "no-upload.json", policy)

    result = check(project, "--policy", str(path), "--json")
    assert result.code == ExitCode.POLICY_DENIED, result.output
    decisions = {c["action"]: c["decision"] for c in first_json(result)["checks"]}
    assert decisions.pop("ecr:InitiateLayerUpload") == "implicit_deny"
    assert set(decisions.values()) == {"allowed"}
    line = error_line(result)
    assert "1 of 10 actions are not allowed" in line
    assert "ecr:InitiateLayerUpload is allowed by no statement" in line
    assert "`shipit iam policy`" in line


def test_an_explicit_deny_exits_13_naming_the_statement(project: Project, tmp_path: Path) -> None:
    allow = write_policy(tmp_path, "push.json", printed_policy(project))
    deny = write_policy(
        tmp_path,
        "guard.json",
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "NoNewRepositories",
                    "Effect": "Deny",
                    "Action": "ecr:Create*",
                    "Resource": "*",
                },
            ],
        },
    )
    result = check(project, "--policy", str(allow), "--policy", str(deny))
    assert result.code == ExitCode.POLICY_DENIED, result.output
    (row,) = [line for line in result.stdout.splitlines() if "ecr:CreateRepository" in line]
    assert row.startswith("explicit deny")
    assert f"NoNewRepositories in {deny}" in row
    line = error_line(result)
    assert f"ecr:CreateRepository is denied by NoNewRepositories in {deny}" in line
    assert "remove the Deny" in line


def test_a_conditional_allow_is_not_counted_as_allowed(project: Project, tmp_path: Path) -> None:
    policy = printed_policy(project)
    policy["Statement"][0]["Condition"] = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}
    path = write_policy(tmp_path, "mfa.json", policy)
    result = check(project, "--policy", str(path), "--json")
    assert result.code == ExitCode.POLICY_DENIED, result.output
    decisions = {c["action"]: c["decision"] for c in first_json(result)["checks"]}
    assert decisions["ecr:GetAuthorizationToken"] == "conditional"
    assert "ecr:GetAuthorizationToken only conditionally" in error_line(result)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            '{"Version": "2012-10-17",\n "Statement": [\n  {"Effect": "Allow" "Action": "*"}]}',
            "line 3, column 22",
        ),
        (
            '{"Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},\n'
            ' {"Sid": "Push", "Effect": "Permit", "Action": "ecr:*", "Resource": "*"}]}',
            "Statement[1] (Sid 'Push'): Effect must be Allow or Deny",
        ),
    ],
)
def test_a_malformed_policy_exits_3_naming_file_and_place(
    project: Project, tmp_path: Path, text: str, where: str
) -> None:
    good = write_policy(tmp_path, "good.json", printed_policy(project))
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    result = check(project, "--policy", str(good), "--policy", str(bad))
    assert result.code == ExitCode.CONFIG, result.output
    assert f"{bad}: {where}" in error_line(result)


def test_each_action_pairs_with_the_resource_at_its_position(
    project: Project, tmp_path: Path
) -> None:
    one = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/one"
    two = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/two"
    path = write_policy(
        tmp_path,
        "one.json",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ecr:PutImage", "Resource": one}],
        },
    )
    policy = ("--policy", str(path), "--json")

    paired = check(
        project,
        *policy,
        "--action",
        "ecr:PutImage",
        "--resource",
        one,
        "--action",
        "ecr:PutImage",
        "--resource",
        two,
    )
    assert paired.code == ExitCode.POLICY_DENIED, paired.output
    got = [(c["resource"], c["decision"]) for c in first_json(paired)["checks"]]
    assert got == [(one, "allowed"), (two, "implicit_deny")]

    one_for_all = check(
        project,
        *policy,
        "--action",
        "ecr:PutImage",
        "--action",
        "ecr:BatchGetImage",
        "--resource",
        one,
    )
    got = [(c["action"], c["resource"], c["decision"]) for c in first_json(one_for_all)["checks"]]
    assert got == [("ecr:PutImage", one, "allowed"), ("ecr:BatchGetImage", one, "implicit_deny")]

    only_put = check(project, *policy, "--action", "ecr:PutImage", "--resource", one)
    assert only_put.code == 0, only_put.output


def test_without_resource_each_action_is_checked_where_shipit_uses_it(
    project: Project, tmp_path: Path
) -> None:
    path = write_policy(tmp_path, "push.json", printed_policy(project, "--repository", "site"))
    result = check(
        project,
        "--policy",
        str(path),
        "--json",
        "--repository",
        "site",
        "--action",
        "ecr:GetAuthorizationToken",
        "--action",
        "ecr:PutImage",
    )
    assert result.code == 0, result.output
    resources = {c["action"]: c["resource"] for c in first_json(result)["checks"]}
    assert resources == {
        "ecr:GetAuthorizationToken": "*",
        "ecr:PutImage": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/site",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--resource", "*"), "--resource needs --action"),
        (
            (
                "--action",
                "ecr:PutImage",
                "--action",
                "ecr:BatchGetImage",
                "--resource",
                "*",
                "--resource",
                "*",
                "--resource",
                "*",
            ),
            "2 --action but 3 --resource",
        ),
        (("--action", "ecr:*", "--resource", "*"), "is not one IAM action"),
    ],
)
def test_bad_action_and_resource_options_are_usage_errors(
    project: Project, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    path = write_policy(tmp_path, "push.json", printed_policy(project))
    result = check(project, "--policy", str(path), *args)
    assert result.code == ExitCode.USAGE, result.output
    assert message in error_line(result)


def test_check_without_policy_is_a_usage_error(project: Project) -> None:
    result = project.shipit("iam", "check")
    assert result.code == ExitCode.USAGE, result.output
    assert "--policy" in result.stderr


def test_check_reads_the_account_from_sts(aws_project: Project, tmp_path: Path) -> None:
    printed = aws_project.shipit("iam", "policy", "--repository", "site")
    path = tmp_path / "push.json"
    path.write_text(printed.stdout)
    result = aws_project.shipit(
        "iam", "check", "--policy", str(path), "--repository", "site", "--json"
    )
    assert result.code == 0, result.output
    scope = first_json(result)["scope"]
    assert scope["account"] == MOTO_ACCOUNT
    assert scope["account_source"].startswith("STS (arn:aws:sts::123456789012:")


def test_help_imports_neither_boto3_nor_docker() -> None:
    code = (
        "import sys\n"
        "from shipit.cli import main\n"
        "for argv in (['--help'], ['iam', '--help'], ['iam', 'check', '--help'],"
        " ['doctor', '--help']):\n"
        "    assert main(argv) == 0, argv\n"
        "heavy = sorted(m for m in ('boto3', 'botocore', 'docker') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert "HEAVY []" in completed.stderr


def mfa_policy(project: Project) -> dict[str, Any]:
    """The push policy behind AWS's own MFA guard (Deny with BoolIfExists ... false)."""
    policy = printed_policy(project)
    policy["Statement"].append(
        {
            "Sid": "RequireMfa",
            "Effect": "Deny",
            "Action": "ecr:PutImage",
            "Resource": "*",
            "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
        }
    )
    return policy


def test_context_decides_a_condition_and_json_names_it(project: Project, tmp_path: Path) -> None:
    path = write_policy(tmp_path, "mfa.json", mfa_policy(project))
    without = check(project, "--policy", str(path), "--json")
    assert without.code == ExitCode.POLICY_DENIED, without.output
    checks = {c["action"]: c for c in first_json(without)["checks"]}
    assert checks["ecr:PutImage"]["decision"] == "conditional"
    assert first_json(without)["context"] is None

    with_mfa = check(
        project, "--policy", str(path), "--json", "--context", "aws:MultiFactorAuthPresent=true"
    )
    assert with_mfa.code == 0, with_mfa.output
    document = first_json(with_mfa)
    assert document["context"] == {"aws:MultiFactorAuthPresent": ["true"]}
    assert {c["decision"] for c in document["checks"]} == {"allowed"}

    no_mfa = check(project, "--policy", str(path), "--json", "--context", "aws:username=ci")
    assert no_mfa.code == ExitCode.POLICY_DENIED, no_mfa.output
    put = {c["action"]: c for c in first_json(no_mfa)["checks"]}["ecr:PutImage"]
    assert (put["decision"], put["statement"]) == ("explicit_deny", "RequireMfa")
    assert put["conditions"] == [
        {
            "operator": "BoolIfExists",
            "key": "aws:MultiFactorAuthPresent",
            "values": ["false"],
            "request_values": None,
            "holds": True,
        }
    ]
    assert "ecr:PutImage is denied by RequireMfa" in error_line(no_mfa)


def test_the_table_shows_the_deciding_condition(project: Project, tmp_path: Path) -> None:
    path = write_policy(tmp_path, "mfa.json", mfa_policy(project))
    result = check(project, "--policy", str(path), "--context", "aws:MultiFactorAuthPresent=false")
    assert result.code == ExitCode.POLICY_DENIED, result.output
    (row,) = [line for line in result.stdout.splitlines() if "ecr:PutImage" in line]
    assert row.startswith("explicit deny")
    assert "BoolIfExists aws:MultiFactorAuthPresent" in row
    assert "(the request has 'false')" in row


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("aws:username", "--context 'aws:username' is not KEY=VALUE"),
        ("username=ci", "--context 'username=ci' is not KEY=VALUE"),
    ],
)
def test_a_malformed_context_is_a_usage_error(
    project: Project, tmp_path: Path, option: str, message: str
) -> None:
    path = write_policy(tmp_path, "push.json", printed_policy(project))
    result = check(project, "--policy", str(path), "--context", option)
    assert result.code == ExitCode.USAGE, result.output
    assert message in error_line(result)
    assert result.stdout == ""


def test_an_unknown_condition_operator_exits_3_naming_the_statement(
    project: Project, tmp_path: Path
) -> None:
    policy = mfa_policy(project)
    policy["Statement"][-1]["Condition"] = {"BoolIfExist": {"aws:MultiFactorAuthPresent": "no"}}
    path = write_policy(tmp_path, "typo.json", policy)
    result = check(project, "--policy", str(path), "--json")
    assert result.code == ExitCode.CONFIG, result.output
    line = error_line(result)
    assert f"{path}: Statement[2] (Sid 'RequireMfa'): unknown condition operator" in line
    assert "'BoolIfExist'" in line


def test_a_policy_over_the_size_limit_exits_3(project: Project, tmp_path: Path) -> None:
    policy = printed_policy(project)
    policy["Statement"][1]["Resource"] = [
        f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team-{number:05d}" for number in range(250)
    ]
    path = write_policy(tmp_path, "huge.json", policy)
    result = check(project, "--policy", str(path))
    assert result.code == ExitCode.CONFIG, result.output
    assert "more than IAM accepts in any identity policy (10240)" in error_line(result)


def test_a_wildcard_resource_type_warns_and_allows_nothing(
    project: Project, tmp_path: Path
) -> None:
    policy = printed_policy(project)
    policy["Statement"][1]["Resource"] = f"arn:aws:ecr:us-east-1:{ACCOUNT}:*/shipit-example"
    path = write_policy(tmp_path, "typed.json", policy)
    result = check(project, "--policy", str(path), "--json")
    assert result.code == ExitCode.POLICY_DENIED, result.output
    document = first_json(result)
    (warning,) = document["warnings"]
    assert "wildcard in its resource type" in warning
    assert warning in result.stderr
    decisions = {c["action"]: c["decision"] for c in document["checks"]}
    assert decisions.pop("ecr:GetAuthorizationToken") == "allowed"
    assert set(decisions.values()) == {"implicit_deny"}


def test_a_short_arn_is_undecided_with_a_warning_and_exit_13(project: Project) -> None:
    statement = {"Sid": "Short", "Effect": "Allow", "Action": "sqs:*", "NotResource": "arn:aws:sqs"}
    policy = write_policy(
        project.root, "short.json", {"Version": "2012-10-17", "Statement": [statement]}
    )
    queue = f"arn:aws:sqs:us-east-1:{ACCOUNT}:jobs"
    check = ("iam", "check", "--policy", str(policy), "--action", "sqs:SendMessage")
    result = project.shipit(*check, "--resource", queue)
    assert result.code == ExitCode.POLICY_DENIED, result.output
    warning = next(line for line in result.stderr.splitlines() if "warning:" in line)
    assert "Short" in warning and "'arn:aws:sqs'" in warning and "undecided" in warning
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == ["undecided"], result.stdout
    assert "sqs:SendMessage is undecided" in error_line(result)
    checked = first_json(project.shipit(*check, "--resource", queue, "--json"))
    assert [c["decision"] for c in checked["checks"]] == ["undecided"]
    assert checked["ok"] is False


KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


def signing_statement(policy: dict[str, Any]) -> dict[str, Any]:
    (statement,) = [s for s in policy["Statement"] if s.get("Sid") == "ShipitSigningKey"]
    return statement


def test_a_push_signed_with_a_kms_key_is_granted_that_key_and_no_other(
    project: Project, tmp_path: Path
) -> None:
    """With signing_key = awskms://, the printed policy grants kms:Sign and
    kms:GetPublicKey on that key only; without them `iam check` exits 13 naming kms:Sign."""
    signed = {"SHIPIT_SIGNING_KEY": f"awskms:///{KEY_ID}"}
    unsigned = printed_policy(project)
    assert all(":kms:" not in str(s["Resource"]) for s in unsigned["Statement"])

    policy = json.loads(
        project.shipit(
            "iam",
            "policy",
            "--account",
            ACCOUNT,
            "--region",
            "us-east-1",
            env=project.env(**signed),
        ).stdout
    )
    statement = signing_statement(policy)
    assert statement["Action"] == ["kms:GetPublicKey", "kms:Sign"]
    assert statement["Resource"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{KEY_ID}"
    whole = write_policy(tmp_path, "signed.json", policy)
    allowed = project.shipit(
        "iam",
        "check",
        "--account",
        ACCOUNT,
        "--region",
        "us-east-1",
        "--policy",
        str(whole),
        "--json",
        env=project.env(**signed),
    )
    assert allowed.code == 0, allowed.output
    decisions = {c["action"]: c["decision"] for c in first_json(allowed)["checks"]}
    assert decisions["kms:Sign"] == decisions["kms:GetPublicKey"] == "allowed"

    denied = project.shipit(
        "iam",
        "check",
        "--account",
        ACCOUNT,
        "--region",
        "us-east-1",
        "--policy",
        str(write_policy(tmp_path, "unsigned.json", unsigned)),
        env=project.env(**signed),
    )
    assert denied.code == ExitCode.POLICY_DENIED, denied.output
    assert "kms:Sign is allowed by no statement" in error_line(denied)


def test_a_kms_alias_is_granted_as_the_key_kms_resolves_it_to(aws_project: AwsProject) -> None:
    """IAM authorises kms:Sign on the key an alias names, not on the alias."""

    assert aws_project.moto
    kms = aws_project.moto.client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    alias = f"alias/shipit-policy-{key['KeyId'][:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    printed = aws_project.shipit(
        "iam", "policy", env=aws_project.env(SHIPIT_SIGNING_KEY=f"awskms:///{alias}")
    )
    assert printed.code == 0, printed.output
    assert signing_statement(json.loads(printed.stdout))["Resource"] == key["Arn"]
