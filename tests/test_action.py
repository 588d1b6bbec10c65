"""The composite GitHub Action (action.yml): linted with actionlint and zizmor on a workflow
that uses it, and its steps run for real, in order, with the files and variables a runner
gives them, on a project that ships to the loopback registries."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.services import moto_ecr_password
from shipit.scaffold import GITHUB_ACTIONS
from tests.conftest import REPO, Project, PublishProject
from tests.test_ci_outputs import parse_github_output, served_at
from tests.test_init_ci import assert_zizmor_passes, tool

ACTION = REPO / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

WORKFLOW = """\
name: ship
on:
  push:
    branches: [main]
permissions: {}
concurrency:
  group: ship-${{ github.ref }}
  cancel-in-progress: false
jobs:
  ship:
    name: ship the site
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@%(checkout)s # %(checkout_version)s
        with:
          persist-credentials: false
      - id: ship
        uses: ./
        with:
          %(with)s
      - name: Use what was pushed
        env:
          DIGEST: ${{ steps.ship.outputs.digest }}
          REFS: ${{ steps.ship.outputs.refs }}
        run: printf 'pushed %%s\\n%%s\\n' "$DIGEST" "$REFS"
"""
# zizmor's self-repository audit asks for `$/` in place of `./`; `./` is the form GitHub
# documents for an action in the workflow's own repository, and the one actionlint reads.
ZIZMOR_CONFIG = "rules:\n  self-repository:\n    disable: true\n"


def action() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ACTION.read_text())
    return loaded


def lint_folder(tmp_path: Path, with_lines: str) -> Path:
    """A repository holding the action at its root and a workflow that uses it as ./"""
    checkout, checkout_version = GITHUB_ACTIONS["CHECKOUT"]
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    shutil.copy(ACTION, tmp_path / "action.yml")
    text = WORKFLOW % {
        "checkout": checkout,
        "checkout_version": checkout_version,
        "with": with_lines,
    }
    (workflows / "ship.yml").write_text(text)
    (tmp_path / "zizmor.yml").write_text(ZIZMOR_CONFIG)
    # actionlint finds `./` from the repository's root: without one it checks no inputs.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def actionlint(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("actionlint"), "-no-color", ".github/workflows/ship.yml"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_workflow_using_the_action_passes_actionlint(tmp_path: Path) -> None:
    folder = lint_folder(tmp_path, 'to: ecr,dockerhub\n          tags: "{sha}, latest"')
    linted = actionlint(folder)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_actionlint_reads_the_action_s_inputs(tmp_path: Path) -> None:
    # The workflow is checked against action.yml itself: an input it lacks is an error.
    linted = actionlint(lint_folder(tmp_path, "registries: ecr"))
    assert linted.returncode == 1
    assert 'input "registries" is not defined in action "shipit"' in linted.stdout


@pytest.mark.parametrize("persona", ["regular", "pedantic"])
def test_the_action_and_its_workflow_pass_zizmor(tmp_path: Path, persona: str) -> None:
    folder = lint_folder(tmp_path, "command: push\n          to: dockerhub")
    said = assert_zizmor_passes(folder, persona, "--config=zizmor.yml", audited=".")
    assert "completed ./action.yml" in said


def test_inputs_reach_the_scripts_only_through_env() -> None:
    for step in action()["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step["name"]


def test_setup_python_is_the_pinned_one_init_writes() -> None:
    (setup,) = [step for step in action()["runs"]["steps"] if "uses" in step]
    commit, version = GITHUB_ACTIONS["SETUP_PYTHON"]
    assert setup["uses"] == f"actions/setup-python@{commit}"
    assert f"uses: actions/setup-python@{commit} # {version}" in ACTION.read_text()
    # The job's own Python stays first on PATH: shipit gets its interpreter, nothing more.
    assert setup["with"]["update-environment"] is False


# The local runner: what GitHub does with a composite action's steps, minus setup-python.


@dataclass
class ActionRun:
    code: int
    outputs: dict[str, str]
    stdout: str
    stderr: str
    summary: str
    runner_temp: Path


def _evaluate(text: str, inputs: Mapping[str, str], steps: Mapping[str, dict[str, str]]) -> str:
    """The expressions action.yml uses; anything else fails the test, so none is faked."""

    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        if found := re.fullmatch(r"inputs\.([\w-]+)", expression):
            return inputs[found[1]]
        if found := re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression):
            # A skipped step, or a step that wrote nothing, gives the empty string.
            return steps.get(found[1], {}).get(found[2], "")
        raise AssertionError(f"the local runner cannot evaluate ${{{{ {expression} }}}}")

    return EXPRESSION.sub(value, text)


def run_action(
    given: Mapping[str, str],
    env: Mapping[str, str],
    workspace: Path,
    action_path: Path,
    tmp_path: Path,
) -> ActionRun:
    definition = action()
    declared = definition["inputs"]
    assert set(given) <= set(declared), set(given) - set(declared)
    inputs = {name: given.get(name, spec.get("default", "")) for name, spec in declared.items()}
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    summary = runner_temp / "step_summary"
    summary.touch()
    steps: dict[str, dict[str, str]] = {}
    stdout = stderr = ""
    code = 0
    for index, step in enumerate(definition["runs"]["steps"]):
        if "uses" in step:
            # The runner already provides a Python; the step's outputs stay empty, as for a
            # skipped step, and the install falls back to python3 from PATH.
            assert step["uses"].startswith("actions/setup-python@"), step
            continue
        assert step["shell"] == "bash" and "if" not in step, step
        output_file = runner_temp / f"output-{index}"
        output_file.touch()
        script = runner_temp / f"step-{index}.sh"
        script.write_text(step["run"])
        step_env = {
            **env,
            **{key: _evaluate(value, inputs, steps) for key, value in step["env"].items()},
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_ACTION_PATH": str(action_path),
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(runner_temp),
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_STEP_SUMMARY": str(summary),
        }
        cwd = workspace / _evaluate(step.get("working-directory", "."), inputs, steps)
        # GitHub's own command line for `shell: bash`.
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        stdout, stderr = stdout + done.stdout, stderr + done.stderr
        if "id" in step:
            steps[step["id"]] = parse_github_output(output_file.read_text())
        if done.returncode != 0:
            code = done.returncode
            break
    outputs = {
        name: _evaluate(spec["value"], inputs, steps)
        for name, spec in definition["outputs"].items()
    }
    return ActionRun(code, outputs, stdout, stderr, summary.read_text(), runner_temp)


@pytest.fixture(scope="module")
def action_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The action's files as GitHub fetches them for `uses: OWNER/REPO@COMMIT`: the
    repository's files, without .git."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    copy = tmp_path_factory.mktemp("action") / "shipit"
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def runner_env(project: Project, tmp_path: Path) -> dict[str, str]:
    """The project's registry settings in the step's env, as a workflow's env: would put
    them; none of the test process's own Python set-up (the action installs shipit)."""
    env = project.env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    for name in ("SHIPIT_PROJECT", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def test_the_action_ships_and_its_outputs_are_what_the_registries_serve(
    publish_project: PublishProject, action_path: Path, tmp_path: Path
) -> None:
    project = publish_project
    assert project.ecr and project.hub
    workspace = project.root.parent
    run = run_action(
        {
            "to": "ecr,dockerhub",
            "tags": "{sha},\nedge",
            "working-directory": project.root.name,
        },
        runner_env(project, tmp_path),
        workspace,
        action_path,
        tmp_path,
    )
    assert run.code == 0, run.stdout + run.stderr

    # shipit came from the action's files into its own environment, not from elsewhere.
    venv_python = run.runner_temp / "shipit-venv" / "bin" / "python"
    where = subprocess.run(
        [str(venv_python), "-c", "import shipit; print(shipit.__file__)"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(run.runner_temp / "shipit-venv"), where

    digest = run.outputs["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), run.outputs
    refs = run.outputs["refs"].splitlines()
    ecr = f"{project.ecr.host}/{project.ecr_repository}"
    hub = f"{project.hub.host}/{project.hub_repository}"
    assert f"{ecr}@{digest}" in refs and f"{hub}@{digest}" in refs
    assert f"{ecr}:edge" in refs and f"{hub}:edge" in refs
    tagged = [ref for ref in refs if "@" not in ref]
    # {sha} and edge in each registry, and no default tag (the input replaced them).
    assert len(tagged) == 4 and not any(ref.endswith(":latest") for ref in tagged), refs
    for ref in refs:
        assert served_at(project, ref) == digest, ref
    assert run.summary.startswith("### shipit ship: done"), run.summary
    assert run.summary.count(f"`{digest}`") == 2
    for secret in (project.hub_token, moto_ecr_password()):
        assert secret not in run.stdout + run.stderr + run.summary


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"command": "deploy"}, "the input command must be ship, push, build or run"),
        ({"command": "build", "to": "ecr"}, "the inputs to and tags apply to ship and push only"),
    ],
)
def test_a_wrong_input_fails_the_step_with_one_line(
    project: Project, action_path: Path, tmp_path: Path, given: dict[str, str], says: str
) -> None:
    given = {**given, "working-directory": project.root.name}
    run = run_action(
        given, runner_env(project, tmp_path), project.root.parent, action_path, tmp_path
    )
    assert run.code == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"shipit action: {says}"
    assert run.outputs == {"digest": "", "refs": ""}
