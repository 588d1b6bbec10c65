"""The AWS profile in use: its region is shipit's when nothing else names one (as boto3's
session reads it), and an expired or missing SSO login says which `aws sso login` to run.
Real botocore, real config files, no network needed: botocore fails before it sends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest

from shipit.config import load_settings
from shipit.errors import ExitCode
from tests.conftest import Project

AWS_CONFIG = """
[default]
region = us-west-2

[profile build]
region = eu-central-1

[profile plain]
output = json

[profile legacy-sso]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
sso_account_id = 123456789012
sso_role_name = Deploy
region = eu-west-3

[profile sso]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Deploy
region = ap-south-1

[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = us-east-1
sso_registration_scopes = sso:account:access
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    aws = tmp_path / "home" / ".aws"
    (aws / "sso" / "cache").mkdir(parents=True)
    (aws / "config").write_text(AWS_CONFIG)
    # An SSO session whose token expired and cannot be refreshed.
    cached = aws / "sso" / "cache" / f"{hashlib.sha1(b'corp').hexdigest()}.json"
    cached.write_text(
        json.dumps(
            {
                "accessToken": "expired",
                "expiresAt": "2020-01-01T00:00:00Z",
                "region": "us-east-1",
                "startUrl": "https://corp.awsapps.com/start",
            }
        )
    )
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("environ", "region", "origin"),
    [
        ({}, "us-west-2", "AWS profile default"),
        ({"AWS_PROFILE": "build"}, "eu-central-1", "AWS profile build"),
        ({"AWS_DEFAULT_PROFILE": "sso"}, "ap-south-1", "AWS profile sso"),
        ({"AWS_PROFILE": "plain"}, "", "default"),
        (
            {"AWS_PROFILE": "build", "AWS_DEFAULT_REGION": "sa-east-1"},
            "sa-east-1",
            "environment AWS_DEFAULT_REGION",
        ),
    ],
)
def test_the_profile_region_is_the_one_boto3_uses(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    region: str,
    origin: str,
) -> None:
    environ = {"HOME": str(home), **environ}
    settings = load_settings(tmp_path, environ=environ)
    assert settings.aws_region == region
    assert settings.origins["aws_region"].startswith(origin)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_CONFIG_FILE", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert (boto3.session.Session().region_name or "") == region


def test_the_project_file_still_wins_over_the_profile(home: Path, tmp_path: Path) -> None:
    (tmp_path / "shipit.toml").write_text('aws_region = "us-east-2"\n')
    settings = load_settings(tmp_path, environ={"HOME": str(home), "AWS_PROFILE": "build"})
    assert (settings.aws_region, settings.origins["aws_region"]) == ("us-east-2", "shipit.toml")


def test_aws_config_file_is_honoured(home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "aws-config"
    elsewhere.write_text("[profile ci]\nregion = ca-central-1\n")
    environ = {"HOME": str(home), "AWS_CONFIG_FILE": str(elsewhere), "AWS_PROFILE": "ci"}
    assert load_settings(tmp_path, environ=environ).aws_region == "ca-central-1"


@pytest.mark.parametrize("profile", ["legacy-sso", "sso"])
def test_an_expired_or_missing_sso_login_names_the_command_to_run(
    project: Project, home: Path, profile: str
) -> None:
    result = project.shipit(
        "iam", "policy", "--json", env=project.env(HOME=str(home), AWS_PROFILE=profile)
    )
    assert result.code == ExitCode.AUTH, result.output
    error = json.loads(result.stdout)["error"]
    assert error["hint"] == f"run `aws sso login --profile {profile}` and try again"
    assert f"SSO login of profile {profile} has expired or is missing" in error["message"]
    assert len(result.stderr.strip().splitlines()) == 1
