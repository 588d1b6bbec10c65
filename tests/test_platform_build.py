"""A build, run and ship of one other platform than the engine's: linux/arm64 from the
suite's two-platform base index, run under QEMU, pushed and pulled back by a client that
asks for arm64."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.loopback import free_port
from tests.conftest import HUB_USER, Project, PublishProject, shipit_containers
from tests.leftovers import engine_image_store

ARM64 = "linux/arm64"


def _inspect(reference: str) -> dict[str, object]:
    out = subprocess.run(
        ["docker", "image", "inspect", reference], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout)[0])


def test_build_of_arm64_writes_an_arm64_image(project: Project, multi_platform_base) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    built = project.shipit("build", "--platform", ARM64, "--json", env=env)
    assert built.code == 0, built.output
    image = _inspect(json.loads(built.stdout)["image_id"])
    assert (image["Os"], image["Architecture"]) == ("linux", "arm64")
    again = project.shipit("build", "--platform", ARM64, "--json", env=env)
    assert again.code == 0, again.output
    assert json.loads(again.stdout)["built"] is False
    native = project.shipit("build", "--json", env=env)
    assert native.code == 0, native.output
    assert json.loads(native.stdout)["image_id"] != json.loads(built.stdout)["image_id"]
    assert _inspect(json.loads(native.stdout)["image_id"])["Architecture"] == "amd64"


def test_ship_of_arm64_is_smoke_tested_under_emulation_and_pulls_back_as_arm64(
    publish_project: PublishProject, multi_platform_base
) -> None:
    env = publish_project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    shipped = publish_project.shipit(
        "ship", "--platform", ARM64, "--to", "dockerhub", "--json", env=env, timeout=300
    )
    assert shipped.code == 0, shipped.output
    report = json.loads(shipped.stdout)
    assert report["run"]["smoke"]["ok"] is True, report["run"]
    assert publish_project.hub is not None
    pushed = report["push"]["registries"][0]
    reference = f"{pushed['reference']}@{pushed['digest']}"
    login = ["docker", "login", publish_project.hub.host, "-u", HUB_USER, "--password-stdin"]
    subprocess.run(login, input=publish_project.hub_token, text=True, check=True)
    try:
        subprocess.run(
            ["docker", "pull", "--platform", ARM64, reference], capture_output=True, check=True
        )
        machine = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--platform",
                ARM64,
                "--entrypoint",
                "uname",
                reference,
                "-m",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert machine.stdout.strip() == "aarch64"
        assert "<html" in _page_served_by(reference, ARM64).lower()
    finally:
        subprocess.run(["docker", "rmi", "-f", reference], capture_output=True, check=False)
        subprocess.run(
            ["docker", "rmi", "-f", pushed["reference"]], capture_output=True, check=False
        )
        subprocess.run(
            ["docker", "logout", publish_project.hub.host], capture_output=True, check=False
        )


def test_a_platform_the_base_lacks_names_the_ones_it_offers(
    project: Project, multi_platform_base
) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    refused = project.shipit("build", "--platform", "linux/s390x", env=env)
    assert refused.code == 3, refused.output
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "linux/amd64" in lines[0] and "linux/arm64" in lines[0]
    assert "linux/s390x" in lines[0]


def test_a_local_single_platform_base_cannot_give_arm64(project: Project) -> None:
    refused = project.shipit("build", "--platform", ARM64)
    assert refused.code != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "arm64" in refused.stderr


@pytest.mark.parametrize("flag", ["linux", "linux/arm64/v8/x", "all,linux/amd64"])
def test_a_malformed_platform_is_one_line(project: Project, flag: str) -> None:
    refused = project.shipit("build", "--platform", flag)
    assert refused.code in (2, 3), refused.output
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_a_build_of_two_platforms_makes_one_image_each(
    project: Project, multi_platform_base
) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    built = project.shipit("build", "--platform", f"{ARM64},linux/amd64", "--json", env=env)
    assert built.code == 0, built.output
    result = json.loads(built.stdout)
    assert [entry["platform"] for entry in result["platforms"]] == ["linux/arm64/v8", "linux/amd64"]
    architectures = [_inspect(entry["image_id"])["Architecture"] for entry in result["platforms"]]
    assert architectures == ["arm64", "amd64"]
    # The engine's own platform is the one tagged as a one-platform build is.
    assert _inspect(f"{project.image}:latest")["Architecture"] == "amd64"
    arm64 = result["platforms"][0]
    assert any(tag.endswith("-linux-arm64-v8") for tag in _inspect(arm64["image_id"])["RepoTags"])
    again = project.shipit("build", "--platform", f"{ARM64},linux/amd64", "--json", env=env)
    assert again.code == 0, again.output
    assert json.loads(again.stdout)["built"] is False
    assert json.loads(again.stdout)["platforms"] == [
        {**entry, "built": False} for entry in result["platforms"]
    ]


def test_a_ship_of_two_platforms_pushes_one_index_to_every_registry(
    publish_project: PublishProject, multi_platform_base
) -> None:
    env = publish_project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    both = ["--platform", f"linux/amd64,{ARM64}"]
    shipped = publish_project.shipit("ship", *both, "--json", env=env, timeout=400)
    assert shipped.code == 0, shipped.output
    report = json.loads(shipped.stdout)
    assert len(report["runs"]) == 2
    assert all(run["smoke"]["ok"] for run in report["runs"])
    registries = report["push"]["registries"]
    assert len(registries) == 2
    digests = {target["digest"] for target in registries}
    assert len(digests) == 1, registries
    assert publish_project.hub is not None
    hub = next(target for target in registries if target["registry"] == "dockerhub")
    index = _raw_manifest(publish_project, f"{hub['reference']}@{hub['digest']}")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [entry["platform"]["architecture"] for entry in index["manifests"]] == [
        "amd64",
        "arm64",
    ]
    # The base layers are the base's own blobs, copied from its registry, not made again.
    built = report["build"]["platforms"]
    for entry, image in zip(index["manifests"], built, strict=True):
        child = _raw_manifest(publish_project, f"{hub['reference']}@{entry['digest']}")
        # The image the engine holds is the one pushed: the classic store names it by its
        # config, the containerd store by its manifest.
        config = child["config"]
        assert isinstance(config, dict)
        named = entry["digest"] if engine_image_store() == "containerd" else config["digest"]
        assert image["image_id"] == named
        platform = f"linux/{entry['platform']['architecture']}"
        base = _base_manifest(multi_platform_base, multi_platform_base.digest_of(platform))
        base_blobs = [layer["digest"] for layer in base["layers"]]
        assert [layer["digest"] for layer in child["layers"]][: len(base_blobs)] == base_blobs
    login = ["docker", "login", publish_project.hub.host, "-u", HUB_USER, "--password-stdin"]
    subprocess.run(login, input=publish_project.hub_token, text=True, check=True)
    pinned = f"{hub['reference']}@{hub['digest']}"
    try:
        for platform, machine in (("linux/amd64", "x86_64"), (ARM64, "aarch64")):
            subprocess.run(
                ["docker", "pull", "--platform", platform, pinned], capture_output=True, check=True
            )
            uname = ["--platform", platform, "--entrypoint", "uname", pinned, "-m"]
            ran = subprocess.run(
                ["docker", "run", "--rm", *uname],
                capture_output=True,
                text=True,
                check=True,
            )
            assert ran.stdout.strip() == machine
            subprocess.run(["docker", "rmi", "-f", pinned], capture_output=True, check=False)
    finally:
        subprocess.run(["docker", "rmi", "-f", pinned], capture_output=True, check=False)
        subprocess.run(
            ["docker", "logout", publish_project.hub.host], capture_output=True, check=False
        )

    again = publish_project.shipit("ship", *both, "--json", env=env, timeout=400)
    assert again.code == 0, again.output
    second = json.loads(again.stdout)
    assert second["runs"] == []
    for target in second["push"]["registries"]:
        assert target["digest"] in digests
        assert target["bytes_uploaded"] == 0
        assert {tag["status"] for tag in target["tags"]} == {"unchanged"}


def _raw_manifest(project: PublishProject, reference: str) -> dict[str, object]:
    assert project.hub is not None
    out = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{HUB_USER}:{project.hub_token}",
            f"docker://{reference}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


@pytest.fixture
def single_platform_base(multi_platform_base, base_registry) -> str:
    """The amd64 image of the base index alone, under a tag of its own."""
    host, path = multi_platform_base.reference.split("/", 1)
    repository = path.rsplit(":", 1)[0]
    digest = multi_platform_base.digest_of("linux/amd64")
    media = "application/vnd.oci.image.manifest.v1+json"
    accept = {"Accept": f"{media}, application/vnd.docker.distribution.manifest.v2+json"}
    got = requests.get(
        f"http://{host}/v2/{repository}/manifests/{digest}", headers=accept, timeout=30
    )
    got.raise_for_status()
    put = requests.put(
        f"http://{host}/v2/{repository}/manifests/amd64-only",
        data=got.content,
        headers={"Content-Type": got.headers["Content-Type"]},
        timeout=30,
    )
    put.raise_for_status()
    return f"{host}/{repository}:amd64-only"


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_single_platform_base_asked_for_two_platforms_says_so(
    project: Project, single_platform_base: str
) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=single_platform_base)
    refused = project.shipit("build", "--platform", f"linux/amd64,{ARM64}", env=env)
    assert refused.code == 3, refused.output
    line = _one_line(refused)
    assert "single-platform" in line and "linux/amd64" in line, line
    assert not _images_of(project.image)


def test_a_base_registry_that_cannot_be_reached_is_one_line(project: Project) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=f"127.0.0.1:{free_port()}/base/nginx:bookworm")
    refused = project.shipit("build", "--platform", ARM64, env=env)
    assert refused.code == 14, refused.output
    assert "linux/arm64" in _one_line(refused)
    assert not _images_of(project.image)


def test_a_base_registry_that_refuses_is_an_auth_error(
    publish_project: PublishProject,
) -> None:
    assert publish_project.hub is not None
    env = publish_project.env(SHIPIT_BASE_IMAGE=f"{publish_project.hub.host}/base/nginx:bookworm")
    refused = publish_project.shipit("build", "--platform", ARM64, env=env)
    assert refused.code == 10, refused.output
    line = _one_line(refused)
    assert "base image" in line and "docker login" in line, line
    assert publish_project.hub_token not in refused.output


def test_without_an_emulator_the_ship_stops_before_any_push(
    publish_project: PublishProject, multi_platform_base
) -> None:
    env = publish_project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    with _no_arm64_emulator():
        refused = publish_project.shipit(
            "ship", "--platform", f"linux/amd64,{ARM64}", "--to", "dockerhub", "-q", env=env
        )
    assert refused.code == 7, refused.output
    line = _one_line(refused)
    assert "qemu-user-static" in line and "tonistiigi/binfmt" in line, line
    assert "--skip-smoke" in line
    assert publish_project.hub is not None
    tags = requests.get(
        f"http://{publish_project.hub.host}/v2/{publish_project.hub_repository}/tags/list",
        auth=(HUB_USER, publish_project.hub_token),
        timeout=30,
    )
    assert tags.status_code == 404 or not tags.json().get("tags"), tags.text
    assert shipit_containers(publish_project.image) == []


def _images_of(image: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "images", "-q", image], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


@contextlib.contextmanager
def _no_arm64_emulator() -> Iterator[None]:
    """binfmt_misc without its aarch64 handler, as on a machine without qemu-user-static."""
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    assert handler.exists(), "scripts/testenv.sh registers qemu-aarch64"
    handler.write_text("0")
    try:
        yield
    finally:
        handler.write_text("1")


def _base_manifest(base, digest: str) -> dict[str, object]:
    host, path = base.reference.split("/", 1)
    repository = path.rsplit(":", 1)[0]
    accept = ", ".join(
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
    )
    got = requests.get(
        f"http://{host}/v2/{repository}/manifests/{digest}", headers={"Accept": accept}, timeout=30
    )
    got.raise_for_status()
    return dict(got.json())


def test_a_one_platform_ship_from_a_registry_base_copies_its_layers(
    publish_project: PublishProject, multi_platform_base
) -> None:
    """Without --platform, a base pulled from a registry (here an index, as Docker Hub's nginx
    is) still gives its layers as the base's own blobs, so the digest depends on nothing local."""
    env = publish_project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    shipped = publish_project.shipit("ship", "--to", "dockerhub", "--json", env=env, timeout=300)
    assert shipped.code == 0, shipped.output
    hub = json.loads(shipped.stdout)["push"]["registries"][0]
    pushed = _raw_manifest(publish_project, f"{hub['reference']}@{hub['digest']}")
    base = _base_manifest(multi_platform_base, multi_platform_base.digest_of("linux/amd64"))
    base_blobs = [layer["digest"] for layer in base["layers"]]
    assert [layer["digest"] for layer in pushed["layers"]][: len(base_blobs)] == base_blobs
    subprocess.run(
        ["docker", "rmi", multi_platform_base.reference], capture_output=True, check=False
    )


def test_every_platform_of_the_base_with_all(project: Project, multi_platform_base) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    built = project.shipit("build", "--platform", "all", "--json", env=env)
    assert built.code == 0, built.output
    platforms = [entry["platform"] for entry in json.loads(built.stdout)["platforms"]]
    assert platforms == ["linux/amd64", "linux/arm64/v8"]  # the base index's order


def test_run_of_arm64_serves_the_arm64_image(project: Project, multi_platform_base) -> None:
    env = project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference, SHIPIT_PORT=str(free_port()))
    ran = project.shipit("run", "--platform", ARM64, "--json", env=env)
    assert ran.code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["smoke"]["ok"] is True
    assert _inspect(result["image_id"])["Architecture"] == "arm64"
    machine = subprocess.run(
        ["docker", "exec", result["container"], "uname", "-m"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert machine.stdout.strip() == "aarch64"
    stopped = project.shipit("stop", env=env)
    assert stopped.code == 0, stopped.output


def test_a_dockerfile_that_docker_build_must_build_is_refused_for_another_platform(
    project: Project, multi_platform_base
) -> None:
    dockerfile = project.root / "templates" / "Dockerfile.j2"
    lines = dockerfile.read_text().splitlines()
    lines.insert(lines.index("FROM {{ base_image }}") + 1, "RUN true")
    dockerfile.write_text("\n".join(lines) + "\n")
    env = project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    refused = project.shipit("build", "--platform", ARM64, "-q", env=env)
    assert refused.code == 12, refused.output
    line = _one_line(refused)
    assert "linux/arm64" in line and "RUN" in line, line
    assert not _images_of(project.image)


def test_push_of_two_platforms_needs_each_smoke_tested(
    publish_project: PublishProject, multi_platform_base
) -> None:
    env = publish_project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    both = ["--platform", f"linux/amd64,{ARM64}"]
    built = publish_project.shipit("build", *both, env=env)
    assert built.code == 0, built.output
    refused = publish_project.shipit("push", *both, "--to", "dockerhub", "-q", env=env)
    assert refused.code == 12, refused.output
    assert "smoke test" in _one_line(refused)
    pushed = publish_project.shipit(
        "push", *both, "--to", "dockerhub", "--skip-smoke", "--json", env=env
    )
    assert pushed.code == 0, pushed.output
    target = json.loads(pushed.stdout)["registries"][0]
    index = _raw_manifest(publish_project, f"{target['reference']}@{target['digest']}")
    assert len(index["manifests"]) == 2


def _doctor_check(result, name: str) -> dict[str, str]:
    checks = json.loads(result.stdout)["checks"]
    return next(check for check in checks if check["name"] == name)


def test_doctor_checks_the_platforms_and_their_emulators(
    project: Project, multi_platform_base
) -> None:
    env = project.env(
        SHIPIT_BASE_IMAGE=multi_platform_base.reference,
        SHIPIT_PLATFORMS=f"linux/amd64,{ARM64}",
    )
    found = _doctor_check(project.shipit("doctor", "--json", env=env), "platforms")
    assert found["outcome"] == "ok", found
    assert "linux/arm64/v8 under emulation" in found["detail"]
    with _no_arm64_emulator():
        missing = _doctor_check(project.shipit("doctor", "--json", env=env), "platforms")
    assert missing["outcome"] == "fail", missing
    assert "qemu-user-static" in missing["hint"]
    lacking = _doctor_check(
        project.shipit("doctor", "--json", env={**env, "SHIPIT_PLATFORMS": "linux/s390x"}),
        "platforms",
    )
    assert lacking["outcome"] == "fail" and "linux/arm64" in lacking["detail"], lacking


def test_an_emulator_is_found_by_its_binfmt_handler(tmp_path: Path) -> None:
    from shipit.doctor import has_emulator

    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64\n")
    (tmp_path / "qemu-riscv64").write_text("disabled\n")
    assert has_emulator("arm64", str(tmp_path))
    assert not has_emulator("riscv64", str(tmp_path))
    assert not has_emulator("s390x", str(tmp_path))


def test_a_push_with_an_empty_blob_store_reads_the_images_from_the_engine(
    publish_project: PublishProject, multi_platform_base, tmp_path: Path
) -> None:
    """A build's kept blobs gone (another cache): the push reads each platform's image from
    the engine's export, as the classic store holds it (layers compressed again) or as the
    containerd store does (the manifest the build loaded, and its blobs as they are), and
    pushes the very images the engine holds."""
    env = publish_project.env(SHIPIT_BASE_IMAGE=multi_platform_base.reference)
    both = ["--platform", f"linux/amd64,{ARM64}"]
    built = publish_project.shipit("build", *both, "--json", env=env)
    assert built.code == 0, built.output
    images = [entry["image_id"] for entry in json.loads(built.stdout)["platforms"]]
    elsewhere = {**env, "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    pushed = publish_project.shipit(
        "push", *both, "--to", "dockerhub", "--skip-smoke", "--json", env=elsewhere
    )
    assert pushed.code == 0, pushed.output
    hub = json.loads(pushed.stdout)["registries"][0]
    assert hub["status"] == "pushed" and hub["bytes_uploaded"] > 0
    index = _raw_manifest(publish_project, f"{hub['reference']}@{hub['digest']}")
    for entry, image_id in zip(index["manifests"], images, strict=True):
        child = _raw_manifest(publish_project, f"{hub['reference']}@{entry['digest']}")
        config = child["config"]
        assert isinstance(config, dict)
        assert image_id in (entry["digest"], config["digest"])


def _page_served_by(reference: str, platform: str) -> str:
    """The home page as the pulled image serves it, as a deployment would run it."""
    port = free_port()
    published = ["-p", f"127.0.0.1:{port}:8080"]
    started = subprocess.run(
        ["docker", "run", "-d", "--rm", "--platform", platform, *published, reference],
        capture_output=True,
        text=True,
        check=True,
    )
    container = started.stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                if answer.status_code == 200:
                    return answer.text
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the pulled image never served its page"
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
