"""`shipit init --ci github|gitlab|none`: the CI definitions it writes, linted with actionlint
and zizmor (offline), and parsed for the jobs they must have."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipit.errors import ExitCode
from shipit.scaffold import GITHUB_ACTIONS, source_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"
INSTALL = f"git+https://github.com/acme/shipit@{COMMIT}"
BIN = Path(sys.executable).parent


def init(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipit", "init", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is missing: make venv installs it with the dev extras"
    return found


@pytest.fixture
def github(tmp_path: Path) -> Path:
    done = init(tmp_path, "site", "--install", INSTALL)
    assert done.returncode == 0, done.stderr
    return tmp_path / "site"


def test_the_workflow_passes_actionlint(github: Path) -> None:
    linted = subprocess.run(
        [tool("actionlint"), "-no-color", ".github/workflows/shipit.yml"],
        cwd=github,
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("persona", ["regular", "pedantic"])
def test_the_workflow_passes_zizmor(github: Path, persona: str) -> None:
    audited = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            f"--persona={persona}",
            "--format=json",
            ".github/workflows/shipit.yml",
        ],
        cwd=github,
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(audited.stdout) == [], audited.stdout
    assert audited.returncode == 0, audited.stderr


def workflow(root: Path) -> dict[Any, Any]:
    text = (root / ".github" / "workflows" / "shipit.yml").read_text()
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def test_the_workflow_tests_pull_requests_without_credentials_and_pushes_main_and_tags(
    github: Path,
) -> None:
    flow = workflow(github)
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers
    assert triggers["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert flow["permissions"] == {}
    assert flow["concurrency"]["group"]
    assert flow["env"]["SHIPIT_INSTALL"] == INSTALL

    test, push = flow["jobs"]["test"], flow["jobs"]["push"]
    assert test["if"] == "github.event_name == 'pull_request'"
    assert test["permissions"] == {"contents": "read"}
    test_text = yaml.safe_dump(test)
    for secret in ("secrets.", "AWS", "DOCKERHUB", "id-token"):
        assert secret not in test_text
    assert [step.get("run") for step in test["steps"]][-2:] == ["shipit run", "shipit stop"]

    assert push["if"] == "github.event_name != 'pull_request'"
    assert push["permissions"] == {"contents": "read", "id-token": "write"}
    assert push["env"]["DOCKERHUB_TOKEN"] == "${{ secrets.DOCKERHUB_TOKEN }}"
    assert push["steps"][-1]["run"] == "shipit ship"
    aws = [step for step in push["steps"] if "configure-aws-credentials" in step.get("uses", "")]
    assert aws[0]["with"]["role-to-assume"] == "${{ vars.AWS_PUSH_ROLE_ARN }}"


def test_every_action_is_pinned_to_a_commit_with_its_version(github: Path) -> None:
    text = (github / ".github" / "workflows" / "shipit.yml").read_text()
    uses = re.findall(r"uses: (\S+)@(\S+)(?: # (\S+))?", text)
    assert len(uses) == 5
    pins = {commit: version for commit, version in GITHUB_ACTIONS.values()}
    for _, ref, version in uses:
        assert re.fullmatch(r"[0-9a-f]{40}", ref)
        assert pins[ref] == version


def test_the_gitlab_pipeline_has_both_jobs_on_dind_over_tls(tmp_path: Path) -> None:
    done = init(tmp_path, "site", "--ci", "gitlab", "--install", INSTALL, "--json")
    assert done.returncode == 0, done.stderr
    assert ".gitlab-ci.yml" in json.loads(done.stdout)["files"]
    root = tmp_path / "site"
    assert not (root / ".github").exists()
    pipeline = yaml.safe_load((root / ".gitlab-ci.yml").read_text())
    variables = pipeline["variables"]
    assert variables["DOCKER_HOST"] == "tcp://docker:2376"
    assert variables["DOCKER_TLS_CERTDIR"] == "/certs"
    assert variables["DOCKER_TLS_VERIFY"] == "1"
    assert variables["SHIPIT_INSTALL"] == INSTALL
    (service,) = pipeline["default"]["services"]
    assert service["name"].startswith("docker:") and service["name"].endswith("-dind")
    assert service["alias"] == "docker"
    assert pipeline["default"]["before_script"] == ['python -m pip install "$SHIPIT_INSTALL"']

    test, push = pipeline["test"], pipeline["push"]
    assert test["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert test["script"] == ["shipit run"]
    assert "id_tokens" not in test and "variables" not in test
    assert push["id_tokens"] == {"AWS_ID_TOKEN": {"aud": "sts.amazonaws.com"}}
    assert push["variables"]["AWS_ROLE_ARN"] == "$AWS_PUSH_ROLE_ARN"
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in push["variables"]
    assert {rule["if"] for rule in push["rules"]} == {
        "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH",
        r"$CI_COMMIT_TAG =~ /^v[0-9]+\.[0-9]+\.[0-9]+/",
    }
    assert push["script"][-1] == "shipit ship"
    assert pipeline["stages"] == ["test", "push"]


def test_ci_none_writes_no_ci_and_needs_no_install(tmp_path: Path) -> None:
    done = init(tmp_path, "site", "--ci", "none")
    assert done.returncode == 0, done.stderr
    root = tmp_path / "site"
    assert (root / "shipit.toml").is_file()
    assert not (root / ".github").exists() and not (root / ".gitlab-ci.yml").exists()
    assert not (root / "Makefile").exists()


@pytest.mark.parametrize(
    "install",
    [
        "shipit",
        "git+https://github.com/acme/shipit",
        "git+https://github.com/acme/shipit@main",
        'git+https://github.com/acme/shipit@" ; curl evil',
        f"git+https://github.com/acme/shi pit@{COMMIT}",
    ],
)
def test_an_unpinned_install_is_refused_before_anything_is_written(
    tmp_path: Path, install: str
) -> None:
    done = init(tmp_path, "site", "--install", install)
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr.startswith("shipit: error: --install ")
    assert "does not pin one version of shipit" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "site").exists()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_default_install_is_where_this_shipit_came_from(tmp_path: Path) -> None:
    repo = tmp_path / "shipit-src"
    repo.mkdir()
    git(repo, "init", "-q")
    git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@e",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    head = git(repo, "rev-parse", "HEAD")
    # A checkout without a remote, or with a local one, names nothing CI can clone.
    assert source_of(None, repo) is None
    git(repo, "remote", "add", "origin", "/srv/git/shipit")
    assert source_of(None, repo) is None
    git(repo, "remote", "set-url", "origin", "git@github.com:acme/shipit.git")
    assert source_of(None, repo) == f"git+https://github.com/acme/shipit.git@{head}"
    # pip install -e . or pip install . from that checkout
    editable = json.dumps({"url": repo.as_uri(), "dir_info": {"editable": True}})
    assert source_of(editable, tmp_path) == f"git+https://github.com/acme/shipit.git@{head}"
    # pip install git+https://...@COMMIT
    from_git = json.dumps(
        {
            "url": "https://user:secret@github.com/acme/shipit",
            "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"},
        }
    )
    assert source_of(from_git, tmp_path) == f"git+https://github.com/acme/shipit@{COMMIT}"
    wheel = json.dumps({"url": "https://example.com/shipit.whl", "archive_info": {}})
    assert source_of(wheel, repo) is None


def test_without_a_known_source_init_says_to_pass_install(tmp_path: Path) -> None:
    """A shipit installed from a wheel or a folder without a remote: nothing tells CI where to
    get it (installed_source() answers None, as source_of does above)."""
    probe = (
        "import sys, shipit.scaffold as s, shipit.cli as c; s.installed_source = lambda: None; "
        "sys.exit(c.main(['init', 'site']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert done.stderr.strip().splitlines() == [
        "shipit: error: cannot tell which shipit the github CI definition should install: this "
        "one was not installed from a git repository with an origin remote; pass --install "
        "git+https://HOST/OWNER/shipit@COMMIT (a full 40-character commit id), or --ci none"
    ]
    assert not (tmp_path / "site").exists()
