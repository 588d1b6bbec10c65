"""The ECR token cache against real parts: moto's server over HTTP (with ECR's 12 h token life,
harness/moto_ecr_server.py), two Distribution registries on loopback and the real engine.

AWS requests are counted in moto's own request log, so "no AWS call" is what moto saw."""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.services import MotoService, moto_ecr_password
from shipit.engine import Engine
from shipit.registries.ecr_cache import CACHE_FILE
from tests.conftest import PublishProject, Result
from tests.test_publish import registries, report_of


def aws_requests(project: PublishProject) -> int:
    """Requests moto has answered so far (STS and ECR are both POST /)."""
    assert project.moto and project.moto.log_path
    return project.moto.log_path.read_text(errors="replace").count('"POST / HTTP/1.1"')


def developer_env(project: PublishProject, cache_home: Path, **extra: str) -> dict[str, str]:
    """A developer's machine: no CI variable, the cache in a folder of the test's own."""
    env = project.env(XDG_CACHE_HOME=str(cache_home), **extra)
    env.pop("CI", None)
    return env


def shipit_traced(project: PublishProject, env: dict[str, str], *args: str) -> Result:
    """shipit under `-X importtime`: stderr also lists every module the process imported."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shipit", *args],
        env=env,
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def imported(result: Result, module: str) -> bool:
    return any(
        line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == module
        for line in result.stderr.splitlines()
    )


def ecr_entry(report: dict[str, Any]) -> dict[str, Any]:
    return registries(report)["ecr"]


def cache_file(cache_home: Path) -> Path:
    return cache_home / "shipit" / CACHE_FILE


def assert_no_token_in(*texts: str) -> None:
    for text in texts:
        assert moto_ecr_password() not in text


def test_second_ship_needs_no_aws_call_and_no_botocore(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    cache_home = tmp_path / "cache"
    env = developer_env(project, cache_home)

    first = shipit_traced(project, env, "ship", "--json")
    assert first.code == 0, first.output
    assert imported(first, "botocore")  # the miss went through boto3
    first_ecr = ecr_entry(report_of(first))
    assert first_ecr["status"] == "pushed"
    assert not any("from cache" in note for note in first_ecr["notes"])

    path = cache_file(cache_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # No temporary left; `blobs` is the push's blob store (shipit/push/blobs.py).
    assert sorted(p.name for p in path.parent.iterdir()) == ["blobs", CACHE_FILE]
    assert not [
        p.name for p in (path.parent / "blobs").iterdir() if p.name.startswith((".", "push-"))
    ]

    before = aws_requests(project)
    second = shipit_traced(project, env, "ship", "--json")
    assert second.code == 0, second.output
    assert aws_requests(project) == before
    assert not imported(second, "botocore")
    assert not imported(second, "boto3")
    report = report_of(second)
    assert report["smoke_reused"] is not None
    for entry in registries(report).values():
        assert entry["status"] == "unchanged"
        assert entry["digest"] == first_ecr["digest"]
    notes = ecr_entry(report)["notes"]
    assert len(notes) == 1 and notes[0].startswith("ECR token from cache (expires ")

    listing = subprocess.run(
        ["ls", "-laR", str(cache_home)], capture_output=True, text=True, check=True
    ).stdout
    assert_no_token_in(first.output, second.output, listing, json.dumps(report))


def test_no_cache_flag_and_ci_ask_aws_and_an_explicit_setting_wins_in_ci(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    cache_home = tmp_path / "cache"
    env = developer_env(project, cache_home)
    assert project.shipit("ship", "--json", env=env).code == 0

    def requests_of(*args: str, **extra: str) -> int:
        before = aws_requests(project)
        result = project.shipit(*args, env={**env, **extra})
        assert result.code == 0, result.output
        assert_no_token_in(result.output)
        assert ecr_entry(report_of(result))["status"] == "unchanged"
        return aws_requests(project) - before

    assert requests_of("push", "--json") == 0
    # STS GetCallerIdentity, ECR DescribeRepositories and GetAuthorizationToken.
    assert requests_of("push", "--json", "--no-cache") == 3
    assert requests_of("ship", "--json", "--no-cache") == 3
    assert requests_of("push", "--json", CI="true") == 3
    assert requests_of("push", "--json", CI="true", SHIPIT_ECR_CACHE="on") == 0
    assert requests_of("push", "--json", SHIPIT_ECR_CACHE="off") == 3


def test_a_token_the_registry_refuses_is_dropped_and_the_push_succeeds(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    cache_home = tmp_path / "cache"
    env = developer_env(project, cache_home)
    assert project.shipit("ship", "--json", env=env).code == 0

    path = cache_file(cache_home)
    document = json.loads(path.read_text())
    (entry,) = document["entries"].values()
    stale = "stale-" + entry["token"]["password"][::-1]
    entry["token"]["password"] = stale
    path.write_text(json.dumps(document))  # keeps the file's mode, 0600

    before = aws_requests(project)
    result = project.shipit("push", "--json", "--debug", env=env)
    assert result.code == 0, result.output
    assert aws_requests(project) - before == 3  # one lookup through AWS, no more
    ecr = ecr_entry(report_of(result))
    assert ecr["status"] == "unchanged"
    assert any("looked it up again" in note for note in ecr["notes"])
    assert not any("from cache" in note for note in ecr["notes"])
    assert "looking up the cached ECR token" in result.stderr
    assert stale not in result.output
    assert_no_token_in(result.output)
    # The fresh token replaced the refused one, so the next push needs no AWS call.
    assert stale not in path.read_text()
    before = aws_requests(project)
    again = project.shipit("push", "--json", env=env)
    assert again.code == 0, again.output
    assert aws_requests(project) == before


def test_a_group_readable_cache_is_refused_with_one_warning(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    cache_home = tmp_path / "cache"
    env = developer_env(project, cache_home)
    assert project.shipit("ship", "--json", env=env).code == 0
    path = cache_file(cache_home)
    os.chmod(path, 0o640)
    written = path.read_bytes()

    before = aws_requests(project)
    result = project.shipit("push", "--json", env=env)
    assert result.code == 0, result.output
    assert aws_requests(project) - before == 3
    notes = ecr_entry(report_of(result))["notes"]
    warnings = [note for note in notes if note.startswith("warning:")]
    assert len(warnings) == 1, notes
    assert "other users can read or write it" in warnings[0]
    assert str(path) in warnings[0]
    assert path.read_bytes() == written  # neither used nor rewritten


def test_the_harness_moto_gives_ecr_tokens_a_12_hour_life(moto: MotoService) -> None:
    client = moto.client("ecr")
    expires = client.get_authorization_token()["authorizationData"][0]["expiresAt"]
    life = expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=11, minutes=59) < life <= datetime.timedelta(hours=12)
