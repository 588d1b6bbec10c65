"""--json gives exactly one JSON document on stdout, on failure too, with the error inside it;
and `shipit` alone prints the help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.services import free_port
from shipit.errors import ExitCode
from tests.conftest import Project

DENY_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}],
}


def failures(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str], int]]:
    """command -> (arguments, extra environment, expected exit code)"""
    policy = tmp_path / "deny.json"
    policy.write_text(json.dumps(DENY_ALL))
    unused = f"http://127.0.0.1:{free_port()}"
    bad_image = {"SHIPIT_IMAGE": "Not A Name"}
    return {
        "render": (["render"], {"SHIPIT_PROJECT": str(tmp_path / "missing")}, ExitCode.TEMPLATE),
        "build": (["build"], {"SHIPIT_BASE_IMAGE": "no spaces allowed"}, ExitCode.CONFIG),
        "init": (["init", "."], {}, ExitCode.PRECONDITION),
        "run": (["run", "--port", "0"], {}, ExitCode.CONFIG),
        "smoke": (["smoke", unused], {}, ExitCode.SMOKE),
        "stop": (["stop"], bad_image, ExitCode.CONFIG),
        "push": (["push", "--to", "nowhere"], {}, ExitCode.CONFIG),
        "ship": (["ship"], bad_image, ExitCode.CONFIG),
        "config": (["config"], {"SHIPIT_PORT": "eighty"}, ExitCode.CONFIG),
        "doctor": (["doctor"], {"DOCKER_HOST": "unix:///nonexistent.sock"}, ExitCode.DOCTOR),
        "iam policy": (["iam", "policy", "--account", "1"], {}, ExitCode.USAGE),
        "iam check": (
            ["iam", "check", "--policy", str(policy), "--account", "123456789012"],
            {"AWS_REGION": "us-east-1"},
            ExitCode.POLICY_DENIED,
        ),
        "unknown option": (["build", "--no-such-option"], {}, ExitCode.USAGE),
    }


COMMANDS = list(failures(Path("/")))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_failing_command_prints_one_json_document(
    command: str, project: Project, tmp_path: Path
) -> None:
    (project.root / "shipit.toml").write_text('image = "json-test"\n')
    arguments, extra, expected = failures(tmp_path)[command]
    result = project.shipit(*arguments, "--json", env=project.env(**extra), timeout=60)
    assert result.code == expected, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["error"]["exit_code"] == expected
    assert document["error"]["message"]
    # The error is said once on stderr for people, too.
    assert result.stderr.count("shipit: error: ") == 1, result.stderr


def test_a_failing_report_keeps_its_report_beside_the_error(project: Project) -> None:
    result = project.shipit("doctor", "--json", env=project.env(DOCKER_HOST="unix:///nope.sock"))
    document = json.loads(result.stdout)
    assert {check["name"] for check in document["checks"]} >= {"engine", "templates"}
    assert document["error"]["class"] == "DoctorError"


def test_shipit_alone_prints_the_help_on_stdout_and_exits_2(tmp_path: Path) -> None:
    for arguments in ([], ["iam"]):
        completed = subprocess.run(
            [sys.executable, "-m", "shipit", *arguments],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert completed.returncode == ExitCode.USAGE
        assert completed.stdout.startswith("Usage: shipit")
        assert "Commands:" in completed.stdout
        assert len(completed.stdout.splitlines()) > 5
        assert completed.stderr == ""
