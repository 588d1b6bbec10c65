"""The README's quick start, run as written: every `$ ` line of its console blocks runs
verbatim in a fresh folder, one after the other (a `cd` carries over), with the registries and
AWS pointing at the loopback registries and moto_server the suite starts. Each command must
exit 0 and print every line the README shows under it (`…` stands for what differs from run to
run). The test reads the README, so a change to the quick start changes what it runs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.services import AWS_ENV_CLEARED, MotoService, RegistryService, free_port
from shipit.config import LOCAL_BASE_IMAGE
from shipit.engine import Engine
from shipit.vcs import CI_COMMIT_VARIABLES
from tests.conftest import HUB_USER, REPO, remove_project_leftovers

ELLIPSIS = "…"
# What the README's quick start tells a user to set before `shipit doctor` and `shipit ship`;
# the test sets the same variables, pointing at loopback services.
PUBLISH_VARIABLES = (
    "SHIPIT_DOCKERHUB_REPOSITORY",
    "DOCKERHUB_USERNAME",
    "DOCKERHUB_TOKEN",
    "SHIPIT_ECR_REPOSITORY",
    "AWS_REGION",
)
# A CI runner's own variables would change what init, tags and the report do.
_RUNNER_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITLAB_CI")


@dataclass
class Step:
    command: str
    shown: list[str] = field(default_factory=list)


def quick_start_section(readme: str) -> str:
    return readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]


def quick_start_steps(readme: str) -> list[Step]:
    """Each `$ COMMAND` line of the quick start's console blocks, with the lines under it."""
    steps: list[Step] = []
    blocks = re.findall(r"^```console\n(.*?)^```", quick_start_section(readme), re.M | re.S)
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            elif steps and line.strip() and line.strip() != ELLIPSIS:
                steps[-1].shown.append(line)
    return steps


def _collapse(text: str) -> str:
    return " ".join(text.split())


def shows(expected: str, output: str) -> bool:
    """Whether one line of `output` reads as `expected`, where `…` stands for anything and
    runs of blanks (table columns) count as one."""
    pattern = ".*".join(re.escape(_collapse(piece)) for piece in expected.split(ELLIPSIS))
    return any(re.search(pattern, _collapse(line)) for line in output.splitlines())


def test_the_quick_start_parser_reads_commands_and_what_they_print() -> None:
    readme = (
        "## Install\n\n```console\n$ not this\n```\n\n## Quick start\n\n"
        "```console\n$ shipit init demo\ncreated 12 files\n$ cd demo\n…\n```\n\n"
        "    export A=1\n\n```console\n$ shipit ship\nok …\n```\n\n## Commands\n"
    )
    steps = quick_start_steps(readme)
    assert [(step.command, step.shown) for step in steps] == [
        ("shipit init demo", ["created 12 files"]),
        ("cd demo", []),
        ("shipit ship", ["ok …"]),
    ]


def test_a_shown_line_matches_with_ellipses_and_columns() -> None:
    output = "push of 123\necr        127.0.0.1:5000/demo  sha256:abc  pushed\n"
    assert shows("ecr  …/demo   sha256:…  pushed", output)
    assert not shows("ecr  …/demo   sha256:…  failed", output)
    assert not shows("dockerhub …", output)


def test_the_readme_has_a_quick_start_of_five_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    steps = quick_start_steps(readme)
    assert len(steps) == 5, [step.command for step in steps]
    assert all(step.command.startswith(("shipit ", "cd ")) for step in steps)
    section = quick_start_section(readme)
    assert [name for name in PUBLISH_VARIABLES if name not in section] == []


def _environment(bin_dir: Path, cache: Path, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SHIPIT_", "DOCKERHUB_", "AWS_", "DOCKER_"))
        and key not in CI_COMMIT_VARIABLES
        and key not in _RUNNER_VARIABLES
        and key not in AWS_ENV_CLEARED
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        XDG_CACHE_HOME=str(cache),
        NO_COLOR="1",
        SHIPIT_BASE_IMAGE=LOCAL_BASE_IMAGE,
        **settings,
    )
    return env


def _shipit_on_path(bin_dir: Path) -> None:
    """`shipit` as the README's install makes it: a command on PATH (this checkout's code)."""
    bin_dir.mkdir()
    script = bin_dir / "shipit"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m shipit "$@"\n')
    script.chmod(0o755)


@pytest.mark.engine
def test_the_quick_start_runs_as_written(
    engine: Engine,
    tmp_path: Path,
    moto: MotoService,
    ecr_registry: RegistryService,
    hub_registry: RegistryService,
    hub_token: str,
) -> None:
    steps = quick_start_steps((REPO / "README.md").read_text(encoding="utf-8"))
    assert steps, "README.md has no `$ ` command in a console block of its Quick start"
    # A name of this run's own, read back as the README's `demo` in what shipit prints.
    name = f"demo-{uuid.uuid4().hex[:10]}"
    port = free_port()
    _shipit_on_path(tmp_path / "bin")
    env = _environment(
        tmp_path / "bin",
        tmp_path / "cache",
        SHIPIT_IMAGE=name,
        SHIPIT_PORT=str(port),
        SHIPIT_ECR_REPOSITORY=name,
        SHIPIT_ECR_REGISTRY=ecr_registry.host,
        SHIPIT_DOCKERHUB_REPOSITORY=f"acme/{name}",
        SHIPIT_DOCKERHUB_REGISTRY=hub_registry.host,
        DOCKERHUB_USERNAME=HUB_USER,
        DOCKERHUB_TOKEN=hub_token,
        **moto.env(),
    )
    folder = tmp_path / "fresh"
    folder.mkdir()
    where = tmp_path / "cwd"
    try:
        for step in steps:
            # The README's line as it is; the shell then says where it left us, for a `cd`.
            script = f'{step.command}\nstatus=$?\npwd > {shlex.quote(str(where))}\nexit "$status"\n'
            completed = subprocess.run(
                ["bash", "-c", script],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            output = (completed.stdout + completed.stderr).replace(name, "demo")
            output = output.replace(f":{port}", ":8080")
            assert completed.returncode == 0, f"$ {step.command}\n{output}"
            missing = [line for line in step.shown if not shows(line, output)]
            assert missing == [], f"$ {step.command} did not print {missing}:\n{output}"
            folder = Path(where.read_text().strip())
    finally:
        remove_project_leftovers(name)
