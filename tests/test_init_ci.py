"""`shipit init --ci github|gitlab|none`: the CI definitions it writes, linted with actionlint
and zizmor (offline), and parsed for the jobs they must have."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipit.errors import ExitCode
from shipit.scaffold import GITHUB_ACTIONS, PLACEHOLDER, Install, installed_source, source_of

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


def assert_actionlint_passes(site: Path) -> None:
    linted = subprocess.run(
        [tool("actionlint"), "-no-color", ".github/workflows/shipit.yml"],
        cwd=site,
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_workflow_passes_actionlint(github: Path) -> None:
    assert_actionlint_passes(github)


def assert_zizmor_passes(
    site: Path, persona: str, *options: str, audited: str = ".github/workflows/shipit.yml"
) -> str:
    """zizmor finds nothing in `audited` (a file or folder under `site`); what it said on
    stderr."""
    done = subprocess.run(
        [tool("zizmor"), "--offline", f"--persona={persona}", *options, "--format=json", audited],
        cwd=site,
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(done.stdout) == [], done.stdout
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.parametrize("persona", ["regular", "pedantic"])
def test_the_workflow_passes_zizmor(github: Path, persona: str) -> None:
    assert_zizmor_passes(github, persona)


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
        "shipit-site",
        # PyPI's `shipit` is another project.
        "shipit==1.2.3",
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


@pytest.mark.parametrize("install", ["shipit-site==1.2.3", "Shipit_Site[ssh]==0.2.1.dev3"])
def test_a_pinned_index_install_is_written_as_given(tmp_path: Path, install: str) -> None:
    done = init(tmp_path, "site", "--install", install)
    assert done.returncode == 0, done.stderr
    assert workflow(tmp_path / "site")["env"]["SHIPIT_INSTALL"] == install


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def commit_in(repo: Path) -> str:
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
    return git(repo, "rev-parse", "HEAD")


def test_the_default_install_is_where_this_shipit_came_from(tmp_path: Path) -> None:
    repo = tmp_path / "shipit-src"
    repo.mkdir()
    head = commit_in(repo)
    # A checkout without a remote, or with a local one, names nothing CI can clone.
    assert source_of(None, repo).placeholder
    git(repo, "remote", "add", "origin", "/srv/git/shipit")
    assert source_of(None, repo) == Install(
        PLACEHOLDER, "the checkout it runs from has a local path (/srv/git/shipit) as its origin"
    )
    git(repo, "remote", "set-url", "origin", "git@github.com:acme/shipit.git")
    pinned = f"git+https://github.com/acme/shipit.git@{head}"
    # Never fetched from that remote: the commit is only here, which init says.
    assert source_of(None, repo) == Install(
        pinned, f"commit {head[:12]} is on no remote branch: push it before CI runs"
    )
    git(repo, "update-ref", "refs/remotes/origin/main", head)
    assert source_of(None, repo) == Install(pinned)
    # pip install -e . or pip install . from that checkout
    editable = json.dumps({"url": repo.as_uri(), "dir_info": {"editable": True}})
    assert source_of(editable, tmp_path) == Install(pinned)
    # pip install git+https://...@COMMIT
    from_git = json.dumps(
        {
            "url": "https://user:secret@github.com/acme/shipit",
            "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"},
        }
    )
    assert source_of(from_git, tmp_path) == Install(f"git+https://github.com/acme/shipit@{COMMIT}")
    local_git = json.dumps({"url": repo.as_uri(), "vcs_info": {"vcs": "git", "commit_id": head}})
    assert source_of(local_git, repo).placeholder
    # pipx install ./shipit_site-0.2.0-py3-none-any.whl
    wheel = "file:///tmp/shipit_site-0.2.0-py3-none-any.whl"
    recorded_wheel = json.dumps({"url": wheel, "archive_info": {}})
    assert source_of(recorded_wheel, repo) == Install(
        PLACEHOLDER, "it was installed from a file (shipit_site-0.2.0-py3-none-any.whl)"
    )


def fake_dist_info(tmp_path: Path, direct_url: str | None) -> Path:
    info = tmp_path / "shipit_site-2.3.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shipit-site\nVersion: 2.3.4\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(direct_url)
    return info


def fake_distribution(tmp_path: Path, direct_url: str | None) -> metadata.Distribution:
    return metadata.PathDistribution(fake_dist_info(tmp_path, direct_url))


def test_an_index_install_pins_its_own_version(tmp_path: Path) -> None:
    """pip records no direct_url.json for an install from an index (PEP 610)."""
    assert installed_source(fake_distribution(tmp_path, None), tmp_path) == Install(
        "shipit-site==2.3.4"
    )


def test_a_recorded_git_install_pins_its_commit(tmp_path: Path) -> None:
    recorded = json.dumps(
        {"url": "https://github.com/acme/shipit", "vcs_info": {"vcs": "git", "commit_id": COMMIT}}
    )
    assert installed_source(fake_distribution(tmp_path, recorded), tmp_path) == Install(INSTALL)


def run_init_from(
    tmp_path: Path, distribution: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """init in a shipit whose own distribution is the fake one at `distribution`."""
    probe = (
        "import sys, importlib.metadata as m, shipit.scaffold as s, shipit.cli as c; "
        f"s._own_distribution = lambda: m.PathDistribution(s.Path({distribution!r})); "
        "sys.exit(c.main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", probe, "init", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


def test_init_from_an_index_install_pins_that_version(tmp_path: Path) -> None:
    info = fake_dist_info(tmp_path, None)
    done = run_init_from(tmp_path, str(info), "site")
    assert done.returncode == 0, done.stderr
    assert workflow(tmp_path / "site")["env"]["SHIPIT_INSTALL"] == "shipit-site==2.3.4"
    assert "note" not in done.stderr


def test_init_from_a_local_origin_checkout_writes_a_placeholder_and_says_so(
    tmp_path: Path,
) -> None:
    """pip install -e . in a clone of a clone: the origin exists only on this machine."""
    checkout = tmp_path / "clone"
    checkout.mkdir()
    commit_in(checkout)
    git(checkout, "remote", "add", "origin", str(tmp_path / "upstream"))
    editable = json.dumps({"url": checkout.as_uri(), "dir_info": {"editable": True}})
    info = fake_dist_info(tmp_path, editable)
    done = run_init_from(tmp_path, str(info), "site", "--ci", "gitlab")
    assert done.returncode == 0, done.stderr
    pipeline = yaml.safe_load((tmp_path / "site" / ".gitlab-ci.yml").read_text())
    assert pipeline["variables"]["SHIPIT_INSTALL"] == PLACEHOLDER
    assert done.stderr.strip().splitlines() == [
        "shipit: note: .gitlab-ci.yml installs a placeholder, as the checkout it runs from has a "
        f"local path ({tmp_path / 'upstream'}) as its origin: set SHIPIT_INSTALL there to a "
        "pinned pip requirement for shipit, or re-run with --force --install SPEC"
    ]


def test_the_placeholder_workflow_passes_actionlint_and_zizmor(tmp_path: Path) -> None:
    wheel = json.dumps({"url": "file:///tmp/shipit-2.3.4-py3-none-any.whl", "archive_info": {}})
    info = fake_dist_info(tmp_path, wheel)
    done = run_init_from(tmp_path, str(info), "site")
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    assert workflow(site)["env"]["SHIPIT_INSTALL"] == PLACEHOLDER
    assert_actionlint_passes(site)
    assert_zizmor_passes(site, "pedantic")


def test_init_starts_a_git_repository(tmp_path: Path) -> None:
    done = init(tmp_path, "site", "--ci", "none")
    assert done.returncode == 0, done.stderr
    assert git(tmp_path / "site", "rev-parse", "--show-toplevel") == str(tmp_path / "site")


def test_init_inside_a_repository_starts_none(tmp_path: Path) -> None:
    commit_in(tmp_path)
    done = init(tmp_path, "site", "--ci", "none")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "site" / ".git").exists()


def test_without_git_init_still_makes_the_project_and_says_so(tmp_path: Path) -> None:
    no_git = tmp_path / "bin"
    no_git.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "init", "site", "--ci", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": str(no_git)},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "shipit.toml").is_file()
    assert not (tmp_path / "site" / ".git").exists()
    assert done.stderr.strip().splitlines() == [
        "shipit: note: git is not installed, so site has no git repository: install git and "
        "run `git init` there"
    ]
