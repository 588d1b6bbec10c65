"""The local half of the pipeline on the real engine: build, run, smoke, stop, and failures."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.services import free_port
from shipit.engine import Engine
from shipit.errors import ExitCode
from shipit.smoke import fetch
from tests.conftest import Project, shipit_containers
from tests.leftovers import engine_image_store


def git(project: Project, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(project.root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def commit_all(project: Project) -> str:
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "site")
    return git(project, "rev-parse", "HEAD")


def test_build_labels_tags_and_no_op_rebuild(engine: Engine, project: Project) -> None:
    sha = commit_all(project)
    first = project.shipit("build", "--json")
    assert first.code == 0, first.output
    built = json.loads(first.stdout)
    assert built["built"] is True
    assert built["tags"] == [f"{project.image}:{sha[:12]}", f"{project.image}:latest"]

    image = engine.image(f"{project.image}:latest")
    assert image is not None and image.id == built["image_id"]
    assert image.labels["org.opencontainers.image.revision"] == sha
    assert image.labels["org.opencontainers.image.version"] == sha[:12]
    assert image.labels["org.opencontainers.image.created"]
    assert "org.opencontainers.image.source" in image.labels
    assert image.labels["io.shipit.context-digest"] == built["context_digest"]
    assert engine.image(f"{project.image}:{sha[:12]}") is not None

    second = project.shipit("build", "--json")
    assert second.code == 0, second.output
    again = json.loads(second.stdout)
    assert again["built"] is False
    assert again["image_id"] == built["image_id"]
    assert "no docker build needed" in second.stderr
    assert "Step 1/" not in second.stderr


def test_a_build_of_unchanged_input_renders_nothing(engine: Engine, project: Project) -> None:
    """The build id digests every input, so the image is found without Jinja."""
    probe = (
        "import sys; sys.argv = ['shipit', 'build', '--json']; import shipit.entry as e; "
        "code = e.main(); print('jinja2' in sys.modules, code, file=sys.stderr)"
    )

    def build_in_process() -> tuple[dict[str, Any], str]:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=project.env(),
            cwd=project.root,
            check=True,
        )
        return json.loads(done.stdout), done.stderr.strip().splitlines()[-1]

    first, first_probe = build_in_process()
    assert (first["built"], first_probe) == (True, "True 0")
    again, again_probe = build_in_process()
    assert (again["built"], again_probe) == (False, "False 0")
    assert again["image_id"] == first["image_id"]
    assert again["build_id"] == first["build_id"]
    assert again["context_digest"] == first["context_digest"]

    # Any input that changes (here a template) changes the build id: rendered and built anew.
    about = project.root / "templates" / "about.html.j2"
    about.write_text(about.read_text() + "\n")
    changed, changed_probe = build_in_process()
    assert (changed["built"], changed_probe) == (True, "True 0")
    assert changed["build_id"] != first["build_id"]


def test_a_fresh_checkout_is_not_dirty_while_git_looks_at_it(
    engine: Engine, project: Project, tmp_path: Path
) -> None:
    """git status runs beside the file scan. A fresh checkout (a CI runner) has no .shipit/
    yet: had shipit created it while git was looking, before its .gitignore, the tree would
    look dirty. A slow git shows whether git ever sees .shipit/ without its .gitignore (the
    project's lock makes .shipit/, with it, before the build starts)."""
    sha = commit_all(project)
    real_git = shutil.which("git")
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" status "*)\n'
        "  sleep 0.5\n"
        f'  if [ -e "{project.root}/.shipit" ] && [ ! -e "{project.root}/.shipit/.gitignore" ]; '
        f'then echo seen >> "{tmp_path}/git-saw"; fi;;\n'
        "esac\n"
        f'exec {real_git} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = project.env(PATH=f"{wrapper.parent}:{os.environ['PATH']}")
    result = project.shipit("build", "--json", env=env)
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["tags"][0] == f"{project.image}:{sha[:12]}"
    assert not (tmp_path / "git-saw").exists(), "git status saw .shipit/ without its .gitignore"
    assert (project.root / ".shipit" / "inputs-index").exists()


def test_outside_git_the_ci_commit_tags_and_labels_the_image(
    engine: Engine, project: Project
) -> None:
    """A CI image without git, or a checkout without history: GITHUB_SHA is the commit."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    outside = project.env(GIT_CEILING_DIRECTORIES=str(project.root.parent))
    result = project.shipit("build", "--json", env={**outside, "GITHUB_SHA": sha})
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["tags"][0] == f"{project.image}:{sha[:12]}"
    assert f"commit {sha[:12]} taken from GITHUB_SHA: git knows no commit here" in result.stderr
    image = engine.image(f"{project.image}:{sha[:12]}")
    assert image is not None
    assert image.labels["org.opencontainers.image.revision"] == sha
    assert image.labels["org.opencontainers.image.version"] == sha[:12]

    unknown = project.shipit("build", "--json", env=outside)
    assert unknown.code == 0, unknown.output
    tag = json.loads(unknown.stdout)["tags"][0].rsplit(":", 1)[1]
    assert tag.startswith("build-")
    warnings = [line for line in unknown.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert (
        f"warning: tagged {tag}, not a commit id: git knows no commit of the project"
        in (warnings[0])
    )
    assert "set GITHUB_SHA or CI_COMMIT_SHA" in warnings[0]


def test_dirty_tree_gets_a_dirty_tag_and_a_new_image(engine: Engine, project: Project) -> None:
    sha = commit_all(project)
    clean = json.loads(project.shipit("build", "--json").stdout)
    project.site_toml.write_text(project.site_toml.read_text().replace("shipit example", "edited"))
    dirty = json.loads(project.shipit("build", "--json").stdout)
    assert dirty["tags"][0] == f"{project.image}:{sha[:12]}-dirty"
    assert dirty["built"] is True
    assert dirty["image_id"] != clean["image_id"]


def test_an_edit_to_the_site_builds_only_its_layer_again(engine: Engine, project: Project) -> None:
    first = json.loads(project.shipit("build", "--json").stdout)
    project.site_toml.write_text(project.site_toml.read_text().replace("shipit example", "edited"))
    edited = project.shipit("build", "--json")
    assert edited.code == 0, edited.output
    if engine_image_store() == "classic":
        assert "its settings and one layer" in edited.stderr
    else:  # the local base came from no registry, which the containerd store's load needs
        assert "with docker build (the containerd image store keeps the manifest" in edited.stderr
        assert "was not pulled from a registry by digest" in edited.stderr
    before = engine.image(first["image_id"])
    after = engine.image(json.loads(edited.stdout)["image_id"])
    assert before is not None and after is not None
    # The base image's layers are shared; only the site's layer is new.
    assert after.layers[:-1] == before.layers[:-1]
    assert after.layers[-1] != before.layers[-1]


def test_an_edit_to_the_site_builds_only_its_layer_again_with_docker_build(
    engine: Engine, project: Project
) -> None:
    env = project.env(SHIPIT_BUILDER="docker")
    assert project.shipit("build", env=env).code == 0
    project.site_toml.write_text(project.site_toml.read_text().replace("shipit example", "edited"))
    edited = project.shipit("build", env=env)
    assert edited.code == 0, edited.output
    steps = [line for line in edited.stderr.splitlines() if line.startswith("Step ")]
    cached = edited.stderr.count("Using cache")
    # FROM needs no cache line; every settings step is cached; the site and labels are new.
    assert [step.split(" : ")[1].split()[0] for step in steps[-2:]] == ["COPY", "LABEL"]
    assert cached == len(steps) - 3, edited.stderr


def test_run_serves_smoke_tests_and_stop_removes(engine: Engine, project: Project) -> None:
    port = free_port()
    assert project.shipit("build").code == 0
    started = project.shipit("run", "--port", str(port), "--json")
    assert started.code == 0, started.output
    result = json.loads(started.stdout)
    assert result["url"] == f"http://127.0.0.1:{port}"
    assert result["smoke"]["ok"] is True
    home = fetch(result["url"], "/")
    assert home.status == 200 and b"Shipped, smoke-tested, verified" in home.body

    # nginx's processes in the container run as the image's non-root user.
    container = shipit_containers(project.image)
    assert len(container) == 1
    top = engine.api.top(container[0], ps_args="-o pid,uid,comm")
    uids = {process[1] for process in top["Processes"]}
    assert uids == {"10101"}, top

    rerun = project.shipit("run", "--port", str(port))
    assert rerun.code == 0, rerun.output
    assert "replaced the previous container" in rerun.stderr
    assert len(shipit_containers(project.image)) == 1

    stopped = project.shipit("stop", "--json")
    assert stopped.code == 0
    assert json.loads(stopped.stdout)["removed"] == [f"shipit-{project.image.replace('/', '-')}"]
    assert shipit_containers(project.image) == []


def test_stale_container_fails_the_smoke_test(engine: Engine, project: Project) -> None:
    port = free_port()
    assert project.shipit("build").code == 0
    assert project.shipit("run", "--port", str(port), "--no-smoke").code == 0
    project.site_toml.write_text(project.site_toml.read_text().replace("shipit example", "v2"))
    assert project.shipit("build").code == 0

    stale = project.shipit("smoke", "--json")
    assert stale.code == ExitCode.SMOKE
    report = json.loads(stale.stdout.split("\n}\n")[0] + "\n}")
    assert [check["name"] for check in report["checks"] if not check["ok"]] == ["build id"]
    assert "build id" in stale.stderr.splitlines()[-1]


def test_busy_port_is_a_clear_error_and_leaves_nothing(engine: Engine, project: Project) -> None:
    assert project.shipit("build").code == 0
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        busy = project.shipit("run", "--port", str(port))
    assert busy.code == ExitCode.RUN
    last = busy.stderr.strip().splitlines()[-1]
    assert last.startswith(f"shipit: error: port 127.0.0.1:{port} is already in use")
    assert shipit_containers(project.image) == []


def _time_wait_sockets_on(port: int) -> int:
    """Connections of this network namespace in TIME_WAIT whose local port is `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "06":
                count += 1
    return count


def test_a_second_run_on_a_port_the_site_just_served(engine: Engine, project: Project) -> None:
    """The site closes connections itself (a 400 here; any browser session's keep-alive
    timeout does the same), which leaves its side's sockets in TIME_WAIT for a minute. The
    engine can publish that port again at once, so shipit must not call it busy."""
    port = free_port()
    first = project.shipit("run", "--port", str(port))
    assert first.code == 0, first.output
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"GET /../x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := connection.recv(4096):  # until the server closes
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert _time_wait_sockets_on(port) > 0, "the site's side closed nothing: no repro"
    second = project.shipit("run", "--port", str(port))
    assert second.code == 0, second.output
    assert len(shipit_containers(project.image)) == 1


def test_port_out_of_range_is_a_config_error(project: Project) -> None:
    result = project.shipit("run", "--port", "70000")
    assert result.code == ExitCode.CONFIG
    assert "flag --port: port 70000 is out of range" in result.stderr


def test_container_that_crashes_is_reported_with_its_log(engine: Engine, project: Project) -> None:
    conf = project.root / "templates" / "nginx.conf.j2"
    conf.write_text(conf.read_text().replace("server_tokens off;", "server_tokens maybe;"))
    assert project.shipit("build").code == 0
    crashed = project.shipit("run", "--port", str(free_port()))
    assert crashed.code == ExitCode.RUN
    assert "exited at start" in crashed.stderr
    assert 'invalid value "maybe"' in crashed.stderr  # nginx's own words, from the container log
    assert shipit_containers(project.image) == []


def test_template_typo_exits_non_zero_naming_file_and_line(
    engine: Engine, project: Project
) -> None:
    page = project.root / "templates" / "index.html.j2"
    page.write_text(page.read_text().replace("{{ site.message }}", "{{ site.mesage }}"))
    result = project.shipit("build")
    assert result.code == ExitCode.TEMPLATE
    assert result.stderr.startswith("shipit: error: templates/index.html.j2:4: UndefinedError")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_site_folder(project: Project, tmp_path: Path) -> None:
    result = project.shipit("render", env=project.env(SHIPIT_PROJECT=str(tmp_path / "empty")))
    assert result.code == ExitCode.TEMPLATE
    assert "no site directory" in result.stderr


def test_unreachable_engine_names_docker_host(project: Project) -> None:
    result = project.shipit("build", env=project.env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert result.code == ExitCode.ENGINE
    assert "DOCKER_HOST=unix:///nonexistent/docker.sock" in result.stderr


def test_missing_base_image_says_how_to_fix(engine: Engine, project: Project) -> None:
    result = project.shipit("build", "--base-image", "shipit-test/no-such-base:1")
    assert result.code == ExitCode.ENGINE
    assert "cannot be pulled" in result.stderr
    assert "--base-image shipit-local/nginx:bookworm" in result.stderr
    assert "using the local base image" not in result.stderr  # asked for explicitly


def test_read_only_root_file_system(engine: Engine, project: Project) -> None:
    assert project.shipit("build").code == 0
    result = project.shipit("run", "--port", str(free_port()), "--read-only", "--json")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["smoke"]["ok"] is True
    container = shipit_containers(project.image)[0]
    assert engine.api.inspect_container(container)["HostConfig"]["ReadonlyRootfs"] is True


def test_run_builds_first_and_falls_back_to_the_local_base(
    engine: Engine, project: Project
) -> None:
    env = project.env()
    del env["SHIPIT_BASE_IMAGE"]  # the default: the pinned official nginx image
    result = project.shipit("run", "--port", str(free_port()), "--json", env=env)
    assert result.code == 0, result.output
    ran = json.loads(result.stdout)
    assert ran["build"]["built"] is True
    assert ran["smoke"]["ok"] is True
    if "cannot pull nginx:" in result.stderr:
        # No registry can be reached here: shipit says so and uses the local base image.
        assert "using the local base image shipit-local/nginx:bookworm" in result.stderr
        assert ran["build"]["base_image"] == "shipit-local/nginx:bookworm"
    else:
        assert ran["build"]["base_image"] == "nginx:1.27.3-bookworm"


def test_run_takes_the_base_image_flag(engine: Engine, project: Project) -> None:
    missing = project.shipit(
        "run", "--base-image", "shipit-test/no-such-base:1", "--port", str(free_port())
    )
    assert missing.code == ExitCode.ENGINE, missing.output
    assert "shipit-test/no-such-base:1" in missing.stderr
    assert shipit_containers(project.image) == []

    env = project.env()
    del env["SHIPIT_BASE_IMAGE"]
    ran = project.shipit(
        "run",
        "--base-image",
        "shipit-local/nginx:bookworm",
        "--port",
        str(free_port()),
        "--json",
        env=env,
    )
    assert ran.code == 0, ran.output
    assert json.loads(ran.stdout)["build"]["base_image"] == "shipit-local/nginx:bookworm"
    assert "cannot pull" not in ran.stderr
    assert project.shipit("stop").code == 0


def test_render_and_build_agree_on_the_default_base_image(engine: Engine, project: Project) -> None:
    """The default base may fall back to the local one when it cannot be pulled: render
    decides by the same rule as build, so both describe the same Dockerfile."""
    env = project.env()
    del env["SHIPIT_BASE_IMAGE"]
    out = project.root / "rendered"
    rendered = project.shipit("render", "--out", str(out), env=env)
    assert rendered.code == 0, rendered.output
    built = project.shipit("build", "--json", env=env)
    assert built.code == 0, built.output
    base = json.loads(built.stdout)["base_image"]
    assert f"FROM {base}\n" in (out / "Dockerfile").read_text()
    assert json.loads(built.stdout)["build_id"] in rendered.stderr + rendered.stdout
