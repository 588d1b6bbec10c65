"""Bad input: refused with one error line, the documented exit code, and nothing left behind.

Every case runs the real command line against the real engine. "Nothing left behind" means:
no container with the project's label and no image tag naming one of the project's
registries (both registries point at loopback ports where nothing listens, so a push that
should never have started would also leave such a tag).

What "unreadable" means for shipit: a file under site/ or templates/ that cannot be read as
a regular file: permission denied (tests run as root, who reads anything, so shipit runs
with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped, as an ordinary user would), a
dangling symlink, or a FIFO (reading one blocks until a writer comes: shipit must refuse
it, not hang).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from harness.services import free_port
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import Project, Result, shipit_containers
from tests.leftovers import image_references
from tests.reliability import Recorder

COMMAND_TIMEOUT = 60.0
HANG_TIMEOUT = 20.0


# -- helpers ------------------------------------------------------------------------------


@dataclass
class Registries:
    """Two loopback registry hosts where nothing listens, unique to one test."""

    hub: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    ecr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")

    def env(self) -> dict[str, str]:
        return {
            "SHIPIT_DOCKERHUB_REGISTRY": self.hub,
            "SHIPIT_DOCKERHUB_REPOSITORY": "abuse/site",
            "SHIPIT_ECR_REGISTRY": self.ecr,
            "DOCKERHUB_USERNAME": "abuse",
            "DOCKERHUB_TOKEN": "dckr_pat_abuse-not-a-real-token",
            "SHIPIT_PORT": str(free_port()),
            "SHIPIT_PUSH_ATTEMPTS": "1",
        }


def leftovers(project: Project, registries: Registries | None = None) -> list[str]:
    """Containers with the project's label and image tags naming its registries."""
    left = [f"container {container}" for container in shipit_containers(project.image)]
    if registries is not None:
        tagged = image_references(registries.hub + "/", registries.ecr + "/")
        left += [f"image {reference}" for reference in tagged]
    return left


def assert_one_line_error(result: Result, expected_code: int, message: str) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.code == expected_code, result.output
    assert lines, "no error message at all"
    last = lines[-1]
    assert last.startswith("shipit: error: "), f"last stderr line: {last!r}"
    assert message in last, f"{message!r} not in {last!r}"
    assert sum(line.startswith("shipit: error") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return last


def assert_refused(
    result: Result | None,
    project: Project,
    registries: Registries,
    reliability: Recorder,
    code: int,
    message: str,
) -> None:
    """Refused with one error line naming `message`, exit `code`, and nothing left behind.
    `result` None: shipit was still running at its deadline (and was killed)."""
    if result is None:
        reliability.observe("still running at the deadline: killed")
    else:
        reliability.result(result)
    left = leftovers(project, registries)
    if left:
        reliability.observe(f"left: {left}")
    assert result is not None, "shipit was still running at the deadline"
    assert_one_line_error(result, code, message)
    assert left == []


def shipit_with_timeout(
    project: Project, args: list[str], env: dict[str, str], timeout: float
) -> Result | None:
    """None when the command was still running after `timeout` s (it is killed)."""
    try:
        return project.shipit(*args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# -- the simple cases: one input, one command ---------------------------------------------


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]
    code: int
    message: str
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Project], None] | None = None
    timeout: float = COMMAND_TIMEOUT  # seconds before it counts as hanging


def _write(relative: str, text: str | bytes) -> Callable[[Project], None]:
    def prepare(project: Project) -> None:
        path = project.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return prepare


def _replace(relative: str, old: str, new: str) -> Callable[[Project], None]:
    def prepare(project: Project) -> None:
        path = project.root / relative
        content = path.read_text()
        assert old in content, f"{relative} changed; update this test"
        path.write_text(content.replace(old, new, 1))

    return prepare


def _remove(relative: str) -> Callable[[Project], None]:
    def prepare(project: Project) -> None:
        shutil.rmtree(project.root / relative)

    return prepare


def _symlink(relative: str, target: str) -> Callable[[Project], None]:
    def prepare(project: Project) -> None:
        (project.root / relative).symlink_to(target)

    return prepare


def _mkfifo(relative: str) -> Callable[[Project], None]:
    def prepare(project: Project) -> None:
        os.mkfifo(project.root / relative)

    return prepare


def _append_site_data(text: str) -> Callable[[Project], None]:
    def prepare(project: Project) -> None:
        with project.site_toml.open("a") as data:
            data.write(text)

    return prepare


CONFIG, TEMPLATE, USAGE, RUN = ExitCode.CONFIG, ExitCode.TEMPLATE, ExitCode.USAGE, ExitCode.RUN
LARGE = 5 * 1024 * 1024
DEEP = 3000

CASES = [
    (
        "port out of range (--port 70000)",
        Bad(("ship", "--port", "70000"), CONFIG, "port 70000 is out of range"),
    ),
    ("port 0", Bad(("run", "--port", "0"), CONFIG, "port 0 is out of range")),
    ("port that is not a number (--port abc)", Bad(("run", "--port", "abc"), USAGE, "--port")),
    (
        "port that is not a number (SHIPIT_PORT=eighty)",
        Bad(("ship",), CONFIG, "SHIPIT_PORT", {"SHIPIT_PORT": "eighty"}),
    ),
    (
        "image name with a space (SHIPIT_IMAGE)",
        Bad(
            ("ship",),
            CONFIG,
            "is not a valid image repository name",
            {"SHIPIT_IMAGE": "shipit site"},
        ),
    ),
    (
        "image name with upper case (SHIPIT_IMAGE)",
        Bad(
            ("build",),
            CONFIG,
            "is not a valid image repository name",
            {"SHIPIT_IMAGE": "Shipit/Site"},
        ),
    ),
    (
        "image name longer than 255 characters (--image)",
        Bad(("build", "--image", "a" * 300), CONFIG, "is not a valid image repository name"),
    ),
    (
        "base image with an invalid tag (--base-image nginx:bad tag!)",
        Bad(
            ("ship", "--base-image", "nginx:bad tag!"),
            CONFIG,
            "has a tag that is not valid: 'bad tag!'",
        ),
    ),
    (
        "base image with an empty tag (--base-image nginx:)",
        Bad(("build", "--base-image", "nginx:"), CONFIG, "has a tag that is not valid: ''"),
    ),
    (
        "base image with a tag longer than 128 characters",
        Bad(("build", "--base-image", "nginx:" + "t" * 129), CONFIG, "is not valid"),
    ),
    (
        "base image path escaping (SHIPIT_BASE_IMAGE=../../etc)",
        Bad(
            ("build",),
            CONFIG,
            "is not a valid image repository name",
            {"SHIPIT_BASE_IMAGE": "../../etc"},
        ),
    ),
    (
        "invalid AWS region (AWS_REGION=moon)",
        Bad(("ship",), CONFIG, "AWS region 'moon' is not a region name", {"AWS_REGION": "moon"}),
    ),
    (
        "IAM account id that is not 12 digits (iam policy --account 1234)",
        Bad(("iam", "policy", "--account", "1234"), USAGE, "is not 12 digits"),
    ),
    ("unknown option (run --prot 8080)", Bad(("run", "--prot", "8080"), USAGE, "--prot")),
    (
        "push attempts of 0 (SHIPIT_PUSH_ATTEMPTS=0)",
        Bad(("ship",), CONFIG, "must be greater than zero", {"SHIPIT_PUSH_ATTEMPTS": "0"}),
    ),
    (
        "engine timeout of 0 (SHIPIT_ENGINE_TIMEOUT=0)",
        Bad(("ship",), CONFIG, "must be greater than zero", {"SHIPIT_ENGINE_TIMEOUT": "0"}),
    ),
    (
        "engine timeout not a number (SHIPIT_ENGINE_TIMEOUT=soon)",
        Bad(("push",), CONFIG, "SHIPIT_ENGINE_TIMEOUT", {"SHIPIT_ENGINE_TIMEOUT": "soon"}),
    ),
    (
        "negative ready timeout (--ready-timeout -1)",
        Bad(("run", "--ready-timeout", "-1"), CONFIG, "must be greater than zero"),
    ),
    (
        "malformed shipit.toml (line 3)",
        Bad(
            ("ship",),
            CONFIG,
            "line 3",
            prepare=_write("shipit.toml", '# settings\nimage = "ok"\nport = = 8080\n'),
        ),
    ),
    (
        "unknown key in shipit.toml",
        Bad(
            ("ship",),
            CONFIG,
            "unknown setting 'colour'",
            prepare=_write("shipit.toml", 'colour = "blue"\n'),
        ),
    ),
    (
        "credential in shipit.toml",
        Bad(
            ("ship",),
            CONFIG,
            "looks like a credential",
            prepare=_write("shipit.toml", 'dockerhub_token = "dckr_pat_x"\n'),
        ),
    ),
    ("missing site/", Bad(("ship",), TEMPLATE, "no site directory", prepare=_remove("site"))),
    (
        "missing templates/",
        Bad(("ship",), TEMPLATE, "no templates directory", prepare=_remove("templates")),
    ),
    (
        "template syntax error (templates/about.html.j2 line 5)",
        Bad(
            ("ship",),
            TEMPLATE,
            "templates/about.html.j2:5: TemplateSyntaxError",
            prepare=_replace(
                "templates/about.html.j2",
                "{%- for paragraph in site.about.paragraphs %}",
                "{%- for paragraph in %}",
            ),
        ),
    ),
    (
        "undefined variable in a page (site.mesage)",
        Bad(
            ("ship",),
            TEMPLATE,
            "templates/index.html.j2:4: UndefinedError",
            prepare=_replace("templates/index.html.j2", "{{ site.message }}", "{{ site.mesage }}"),
        ),
    ),
    (
        "undefined variable in the Dockerfile template",
        Bad(
            ("build",),
            TEMPLATE,
            "templates/Dockerfile.j2:2: UndefinedError",
            prepare=_replace(
                "templates/Dockerfile.j2", "FROM {{ base_image }}", "FROM {{ base_imag }}"
            ),
        ),
    ),
    (
        "site.toml that is not valid TOML",
        Bad(
            ("ship",),
            TEMPLATE,
            "site/site.toml is not valid TOML",
            prepare=_append_site_data("\n[[nav]\n"),
        ),
    ),
    (
        "site.toml that is not UTF-8",
        Bad(
            ("ship",),
            TEMPLATE,
            "site/site.toml is not valid TOML",
            prepare=_write("site/site.toml", b'title = "caf\xe9"\n'),
        ),
    ),
    (
        "very large site data (5 MiB site.toml)",
        Bad(
            ("ship",),
            TEMPLATE,
            "more than the 4194304 allowed",
            prepare=_append_site_data(f'\nblob = "{"x" * LARGE}"\n'),
        ),
    ),
    (
        "deeply nested site data (3000 nested arrays, 6 kB)",
        Bad(
            ("ship",),
            TEMPLATE,
            "site/site.toml",
            prepare=_append_site_data(f"\ndeep = {'[' * DEEP}{']' * DEEP}\n"),
        ),
    ),
    (
        "missing index.html.j2",
        Bad(
            ("ship",),
            TEMPLATE,
            "no templates/index.html.j2",
            prepare=lambda p: (p.root / "templates" / "index.html.j2").unlink(),
        ),
    ),
    (
        "--host that is not an address of this machine (203.0.113.7)",
        Bad(("run", "--host", "203.0.113.7"), RUN, "cannot publish on 203.0.113.7"),
    ),
    (
        "dangling symlink in site/static/",
        Bad(
            ("ship",),
            TEMPLATE,
            "site/static/gone.css",
            prepare=_symlink("site/static/gone.css", "no-such-file.css"),
        ),
    ),
    (
        "FIFO in site/static/ (a read blocks until a writer comes)",
        Bad(
            ("ship",),
            TEMPLATE,
            "site/static/pipe",
            prepare=_mkfifo("site/static/pipe"),
            timeout=HANG_TIMEOUT,
        ),
    ),
]


def _expected(bad: Bad) -> str:
    within = f" within {bad.timeout:g} s" if bad.timeout != COMMAND_TIMEOUT else ""
    return f"exit {bad.code} ({ExitCode(bad.code).name}){within}, one line with {bad.message!r}"


@pytest.mark.engine
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            bad,
            id=case,
            marks=pytest.mark.reliability(case, _expected(bad)),
        )
        for case, bad in CASES
    ],
)
def test_bad_input_is_refused(project: Project, bad: Bad, reliability: Recorder) -> None:
    registries = Registries()
    if bad.prepare is not None:
        bad.prepare(project)
    env = project.env(**{**registries.env(), **bad.env})
    result = shipit_with_timeout(project, list(bad.args), env, bad.timeout)
    assert_refused(result, project, registries, reliability, bad.code, bad.message)


# -- cases that need more than one input ---------------------------------------------------


@pytest.mark.engine
@pytest.mark.reliability(
    "busy port (something listens on --port)",
    "exit 7 (RUN), one line naming the port; no container, nothing pushed",
)
def test_busy_port(project: Project, reliability: Recorder) -> None:
    registries = Registries()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = project.shipit("ship", "--port", str(port), env=project.env(**registries.env()))
    message = f"port 127.0.0.1:{port} is already in use"
    assert_refused(result, project, registries, reliability, ExitCode.RUN, message)


def _without_dac_override(project: Project, args: list[str], env: dict[str, str]) -> Result:
    """shipit as root without the capabilities that let root read any file."""
    completed = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            "--",
            sys.executable,
            "-m",
            "shipit",
            *args,
        ],
        env=env,
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.mark.engine
@pytest.mark.reliability(
    "unreadable static file (mode 000, read without root's DAC override)",
    "exit 4 (TEMPLATE), one line naming site/static/secret.txt and Permission denied",
)
def test_unreadable_static_file(project: Project, reliability: Recorder) -> None:
    registries = Registries()
    secret = project.root / "site" / "static" / "secret.txt"
    secret.write_text("not for anyone\n")
    secret.chmod(0)
    # The test itself must see the file really unreadable for such a user.
    probe = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "cat", str(secret)],
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0, "setpriv did not drop root's DAC override"
    result = _without_dac_override(project, ["ship"], project.env(**registries.env()))
    message = "site/static/secret.txt"
    assert_refused(result, project, registries, reliability, ExitCode.TEMPLATE, message)
    assert "Permission denied" in result.stderr


def test_leftovers_sees_a_container_and_a_registry_tag(engine: Engine, project: Project) -> None:
    """The "nothing left behind" check can fail: it sees what it is meant to see."""
    registries = Registries()
    reference = f"{registries.hub}/abuse/site:leftover"
    container = subprocess.run(
        [
            "docker",
            "create",
            "--label",
            f"io.shipit.image={project.image}",
            "shipit-local/nginx:bookworm",
            "true",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        subprocess.run(
            ["docker", "tag", "shipit-local/nginx:bookworm", reference],
            capture_output=True,
            check=True,
        )
        left = leftovers(project, registries)
        assert f"container {container[:12]}" in left and f"image {reference}" in left
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", reference], capture_output=True, check=False)
    assert leftovers(project, registries) == []
