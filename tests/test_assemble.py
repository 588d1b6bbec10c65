"""The image shipit writes itself (shipit/assemble.py) against what docker build makes of the
same Dockerfile: the same settings and the same files, and docker build whenever the
Dockerfile holds anything else."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from harness.loopback import free_port
from shipit.assemble import (
    Recipe,
    Unsupported,
    apply_settings,
    base_blocker,
    history_of,
    image_config,
    instructions_of,
    recipe_of,
)
from shipit.engine import Engine
from shipit.errors import BuildError, ExitCode
from shipit.inputs import CHUNK_BYTES, TornFileError
from shipit.labels import LABEL_BUILDER
from shipit.load_archive import Assembly
from shipit.render import SERVED, render_site
from tests.conftest import Project, copy_example, remove_project_leftovers
from tests.leftovers import image_references
from tests.test_big_sites import FullDiskEngine, written_to_midway

BASE = "shipit-local/nginx:bookworm"


def example_dockerfile(tmp_path: Path) -> str:
    site = render_site(copy_example(tmp_path / "p"), BASE)
    return site.files.generated["Dockerfile"].decode()


def recipe(text: str) -> Recipe:
    found = recipe_of(text, BASE, SERVED)
    assert isinstance(found, Recipe), found
    return found


def why(text: str) -> str:
    found = recipe_of(text, BASE, SERVED)
    assert isinstance(found, Unsupported), found
    return found.reason


# The Dockerfile: what is understood, and what is left to docker build


def test_the_bundled_dockerfile_is_settings_and_one_copy(tmp_path: Path) -> None:
    found = recipe(example_dockerfile(tmp_path))
    assert [step.keyword for step in found.settings] == [
        "USER",
        "EXPOSE",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "ENTRYPOINT",
    ]
    assert (found.copy_source, found.copy_destination) == ("shipit", "/srv/shipit")


def test_continuation_lines_join_and_comments_inside_them_drop() -> None:
    parsed = instructions_of(
        "FROM x\n# a comment\nHEALTHCHECK --interval=5s \\\n# dropped\n\n  CMD true\nUSER 1\n"
    )
    assert isinstance(parsed, list)
    assert [(item.line, item.keyword, item.arguments) for item in parsed] == [
        (1, "FROM", "x"),
        (3, "HEALTHCHECK", "--interval=5s   CMD true"),
        (7, "USER", "1"),
    ]
    tabbed = instructions_of("FROM\tx\nexpose  8080\nCMD \\\n")
    assert isinstance(tabbed, list)
    assert [(item.keyword, item.arguments) for item in tabbed] == [
        ("FROM", "x"),
        ("EXPOSE", "8080"),
        ("CMD", ""),
    ]


@pytest.mark.parametrize(
    ("dockerfile", "reason"),
    [
        (f"FROM {BASE}\nRUN true\nCOPY shipit/ /srv/shipit/\n", "RUN on line 2"),
        (f"FROM {BASE}\nENV A=1\nCOPY shipit/ /srv/shipit/\n", "ENV on line 2"),
        (f"FROM {BASE}\nLABEL a=b\nCOPY shipit/ /srv/shipit/\n", "LABEL on line 2"),
        (f"FROM {BASE}\nWORKDIR /srv\nCOPY shipit/ /srv/shipit/\n", "WORKDIR on line 2"),
        (f"# escape=`\nFROM {BASE}\nCOPY shipit/ /srv/shipit/\n", "parser directive on line 1"),
        (f"FROM {BASE} AS site\nCOPY shipit/ /srv/shipit/\n", "is not just the base image"),
        ("FROM other:1\nCOPY shipit/ /srv/shipit/\n", "is not just the base image"),
        (f"FROM {BASE}\n", "0 COPY instructions"),
        (f"FROM {BASE}\nCOPY shipit/ /a/\nCOPY shipit/ /b/\n", "2 COPY instructions"),
        (f"FROM {BASE}\nCOPY --chown=1:1 shipit/ /srv/shipit/\n", "is not `COPY shipit/"),
        (f"FROM {BASE}\nCOPY shipit/site/ /srv/shipit/\n", "is not `COPY shipit/"),
        (f"FROM {BASE}\nCOPY shipit/ $DEST\n", "is not `COPY shipit/"),
        (f"FROM {BASE}\nCOPY shipit/ srv/\n", "is not `COPY shipit/"),
        (f"FROM {BASE}\nCOPY shipit/ /tmp/site/\n", "a COPY into /tmp"),
        (f"FROM {BASE}\nUSER $APP_USER\nCOPY shipit/ /srv/shipit/\n", "quoting or variables"),
        (f"FROM {BASE}\nEXPOSE 8000-8010\nCOPY shipit/ /srv/shipit/\n", "EXPOSE 8000-8010"),
        (f"FROM {BASE}\nSTOPSIGNAL SIGNOPE\nCOPY shipit/ /srv/shipit/\n", "STOPSIGNAL SIGNOPE"),
        (
            f"FROM {BASE}\nHEALTHCHECK --interval=soon CMD true\nCOPY shipit/ /srv/shipit/\n",
            "is not a duration",
        ),
        (
            f"FROM {BASE}\nHEALTHCHECK --start-interval=1s CMD true\nCOPY shipit/ /srv/shipit/\n",
            "HEALTHCHECK --start-interval",
        ),
    ],
)
def test_what_docker_build_must_do_is_left_to_it(dockerfile: str, reason: str) -> None:
    assert reason in why(dockerfile)


def test_settings_apply_as_the_builder_applies_them() -> None:
    base = {
        "Cmd": ["nginx", "-g", "daemon off;"],
        "ExposedPorts": {"80/tcp": {}},
        "Shell": ["/bin/bash", "-c"],
    }
    applied = apply_settings(
        dict(base),
        recipe(
            f"FROM {BASE}\nEXPOSE 8080 53/UDP\nSTOPSIGNAL SIGQUIT\n"
            "HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD curl -f localhost\n"
            'ENTRYPOINT ["/usr/sbin/nginx"]\nCOPY shipit/ /srv/shipit/\n'
        ),
    )
    assert applied["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}, "53/udp": {}}
    assert applied["StopSignal"] == "SIGQUIT"
    assert applied["Healthcheck"] == {
        "Test": ["CMD-SHELL", "curl -f localhost"],
        "Interval": 90_000_000_000,
        "Timeout": 500_000_000,
        "Retries": 3,
    }
    # An ENTRYPOINT clears the base image's CMD...
    assert applied["Entrypoint"] == ["/usr/sbin/nginx"] and applied["Cmd"] is None
    # ...but not a CMD this Dockerfile set before it; the shell form uses the image's SHELL.
    kept = apply_settings(
        dict(base),
        recipe(f"FROM {BASE}\nCMD serve --quiet\nENTRYPOINT run\nCOPY shipit/ /srv/shipit/\n"),
    )
    assert kept["Cmd"] == ["/bin/bash", "-c", "serve --quiet"]
    assert kept["Entrypoint"] == ["/bin/bash", "-c", "run"]
    none = apply_settings({}, recipe(f"FROM {BASE}\nHEALTHCHECK NONE\nCOPY shipit/ /srv/x\n"))
    assert none["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize("signal", ["SIGQUIT", "quit", "9", "SIGRTMIN+3"])
def test_stop_signals_docker_accepts_are_kept(signal: str) -> None:
    found = recipe(f"FROM {BASE}\nSTOPSIGNAL {signal}\nCOPY shipit/ /srv/shipit/\n")
    assert apply_settings({}, found)["StopSignal"] == signal


def test_a_base_with_onbuild_steps_or_for_another_os_needs_docker_build() -> None:
    assert base_blocker({"Os": "linux", "Config": {"OnBuild": None}}) is None
    assert "ONBUILD" in (base_blocker({"Os": "linux", "Config": {"OnBuild": ["RUN x"]}}) or "")
    assert "windows" in (base_blocker({"Os": "windows", "Config": {}}) or "")


def test_history_must_account_for_every_base_layer() -> None:
    listing = [
        {"Created": 20, "CreatedBy": "CMD x", "Size": 0},
        {"Created": 10, "CreatedBy": "ADD rootfs", "Size": 5, "Comment": "c"},
    ]
    entries = history_of(listing, base_layers=1)
    assert entries == [
        {"created": "1970-01-01T00:00:10Z", "created_by": "ADD rootfs", "comment": "c"},
        {"created": "1970-01-01T00:00:20Z", "created_by": "CMD x", "empty_layer": True},
    ]
    assert history_of(listing, base_layers=2) is None


def test_the_config_is_the_same_whichever_engine_version_showed_the_base() -> None:
    """Docker 20.10's inspect lists every container field of the base's config, empty or
    false; later API versions leave some out. The written config must not depend on that."""
    found = recipe(f"FROM {BASE}\nUSER nginx\nCOPY shipit/ /srv/shipit/\n")
    set_fields = {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}}}
    listed = {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "Tty": False,
        "Env": None,
        "Image": "",
        "Volumes": None,
        "OnBuild": None,
        "Labels": None,
        **set_fields,
    }
    base = {"Id": "sha256:" + "b" * 64, "Os": "linux", "RootFS": {"Layers": []}}

    def config(fields: dict[str, Any]) -> bytes:
        return image_config({**base, "Config": fields}, [], found, {}, "sha256:" + "d" * 64, "Z")

    assert config(listed) == config(set_fields)
    written = json.loads(config(listed))
    assert written["config"]["User"] == "nginx" and written["config"]["Cmd"] == set_fields["Cmd"]
    assert config(listed) == json.dumps(written, sort_keys=True, separators=(",", ":")).encode()


# On the engine: the same image as docker build's


def _inspect(reference: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "image", "inspect", reference], capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(out.stdout)[0]
    return data


def _files(reference: str) -> list[str]:
    """Every file under /srv with its mode, owner, size, time and content digest."""
    listing = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            reference,
            "-c",
            "cd /srv && find . -type f -printf '%p %m %U:%G %s %T@ ' -exec sha256sum {} \\; "
            "| sort; find . -type d -printf '%p %m %U:%G\\n' | sort",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.splitlines()


@pytest.fixture
def other_image(project: Project) -> Iterator[str]:
    image = f"{project.image}-docker"
    yield image
    remove_project_leftovers(image)


def test_the_written_image_is_what_docker_build_makes(
    engine: Engine, project: Project, other_image: str
) -> None:
    (project.root / "site" / "static" / "deep" / "er").mkdir(parents=True)
    (project.root / "site" / "static" / "deep" / "er" / "file.txt").write_text("deep\n")
    (project.root / "site" / "static" / "ünïcode näme.txt").write_text("name\n")
    (project.root / "site" / "static" / ("long-" * 30 + ".txt")).write_text("long\n")
    written = project.shipit("build", "--json")
    assert written.code == 0, written.output
    assert "with docker build" not in written.stderr
    assert "its settings and one layer" in written.stderr
    first = json.loads(written.stdout)

    # Another image name: the written image must not be reused.
    built = project.shipit(
        "build", "--json", env=project.env(SHIPIT_BUILDER="docker", SHIPIT_IMAGE=other_image)
    )
    assert built.code == 0, built.output
    assert "with docker build (builder = docker)" in built.stderr
    second = json.loads(built.stdout)
    assert second["built"] and second["build_id"] == first["build_id"]
    assert second["context_digest"] == first["context_digest"]

    mine, theirs = _inspect(first["image_id"]), _inspect(second["image_id"])
    for document in (mine, theirs):
        document["Config"].pop("Image")
        # The time (docker build's is its own), the image name, and who made it.
        for volatile in ("org.opencontainers.image.created", "io.shipit.image", LABEL_BUILDER):
            document["Config"]["Labels"].pop(volatile)
    assert mine["Config"] == theirs["Config"]
    assert mine["RootFS"]["Layers"][:-1] == theirs["RootFS"]["Layers"][:-1]
    assert len(mine["RootFS"]["Layers"]) == len(theirs["RootFS"]["Layers"])
    assert (mine["Os"], mine["Architecture"]) == (theirs["Os"], theirs["Architecture"])
    assert _files(first["image_id"]) == _files(second["image_id"])


def test_the_written_image_serves_and_passes_its_smoke_test(
    engine: Engine, project: Project
) -> None:
    port = free_port()
    result = project.shipit("run", "--port", str(port), "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["smoke"]["ok"] is True
    assert project.shipit("stop").code == 0


def test_a_dockerfile_with_a_run_step_is_built_by_docker_build(
    engine: Engine, project: Project
) -> None:
    dockerfile = project.root / "templates" / "Dockerfile.j2"
    dockerfile.write_text(
        dockerfile.read_text().replace("USER {{ run_as }}", "RUN true\nUSER {{ run_as }}")
    )
    result = project.shipit("build", "--json")
    assert result.code == 0, result.output
    assert "with docker build (the Dockerfile has RUN on line" in result.stderr
    assert "Step " in result.stderr


def test_a_file_written_during_the_load_fails_it_and_loads_nothing(
    engine: Engine, project: Project
) -> None:
    big = project.root / "site" / "static" / "big.bin"
    big.write_bytes(b"a" * (4 * CHUNK_BYTES))
    site = render_site(project.root, BASE)
    found = recipe(site.files.generated["Dockerfile"].decode())
    base = engine.image_document(BASE)
    history = history_of(engine.image_history(BASE), len(base["RootFS"]["Layers"]))
    assert history is not None
    reference = f"{project.image}:torn"

    def assembly() -> Assembly:
        return Assembly(site, found, base, history, {}, "2026-01-01T00:00:00Z", (reference,))

    torn = assembly()
    with pytest.raises(TornFileError) as caught:
        engine.load(written_to_midway(torn.archive(), big), reference)
    assert caught.value.one_line().startswith("site/static/big.bin changed while shipit")
    assert torn.image_id == ""
    assert image_references(project.image) == []
    # The engine dropped the unfinished archive: a whole one loads.
    site = render_site(project.root, BASE)
    whole = assembly()
    engine.load(whole.archive(), reference)
    loaded = engine.image(reference)
    assert loaded is not None and loaded.id == whole.image_id


def test_the_archive_is_a_valid_tar_whose_layer_has_the_site(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "p")
    site = render_site(project, BASE)
    found = recipe(site.files.generated["Dockerfile"].decode())
    base = {"Id": "sha256:" + "0" * 64, "RootFS": {"Layers": ["sha256:" + "1" * 64]}}
    tags = ("x/y:1", "x/y:latest")
    assembly = Assembly(site, found, base, [{"created": "x"}], {"a": "b"}, "t", tags)
    archive = tmp_path / "image.tar"
    with archive.open("wb") as stream:
        for piece in assembly.archive():
            stream.write(piece)
    with tarfile.open(archive) as outer:
        assert outer.getnames() == ["layer.tar", "config.json", "manifest.json"]
        config = json.load(outer.extractfile("config.json"))  # type: ignore[arg-type]
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = outer.extractfile("layer.tar")
        assert layer is not None
        with tarfile.open(fileobj=layer) as inner:
            names = inner.getnames()
    with tarfile.open(archive) as outer:
        layer_bytes = outer.extractfile("layer.tar").read()  # type: ignore[union-attr]
    assert f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}" == config["rootfs"]["diff_ids"][-1]
    assert assembly.image_id.startswith("sha256:")
    assert manifest[0]["RepoTags"] == ["x/y:1", "x/y:latest"]
    assert manifest[0]["Layers"] == ["base/0/layer.tar", "layer.tar"]
    assert names[:2] == ["srv", "srv/shipit"]
    assert "srv/shipit/site/index.html" in names and "srv/shipit/nginx.conf" in names
    assert config["config"]["Labels"] == {"a": "b"}
    assert config["config"]["Env"][-1].startswith("PATH=")


def test_the_engine_disk_filling_during_a_load_is_one_line_that_says_so(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "p")
    (project / "site" / "static" / "big.bin").write_bytes(b"\0" * 3 * CHUNK_BYTES)
    site = render_site(project, BASE)
    found = recipe(site.files.generated["Dockerfile"].decode())
    base = {"Id": "sha256:" + "0" * 64, "RootFS": {"Layers": ["sha256:" + "1" * 64]}}
    assembly = Assembly(site, found, base, [{"created": "x"}], {}, "t", ("x/y:1",))
    error = "write /var/lib/docker/tmp/docker-import-1/layer.tar: no space left on device"
    full = FullDiskEngine([{"errorDetail": {"message": error}, "error": error}])
    with full as server, pytest.raises(BuildError) as caught:
        Engine(docker.APIClient(base_url=f"tcp://{server.host}", version="1.41")).load(
            assembly.archive(), "x/y:1"
        )
    assert server.received > 3 * CHUNK_BYTES  # the archive was streamed in full
    error = caught.value
    assert error.exit_code == ExitCode.BUILD
    assert "no space left on device" in error.message
    assert "disk is full" in error.hint
    assert "\n" not in error.one_line()
