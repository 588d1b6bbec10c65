"""The multi-platform nginx base of the test environment: scripts/write_oci_layout.py writes
it from a root filesystem per platform (the same bytes from the same files), and pulled back
from a loopback registry each platform runs as its own machine, arm64 under qemu."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.platform_base import PlatformBase, platform_name
from harness.services import wait_until
from shipit.engine import Engine
from tests.leftovers import docker_words

REPO = Path(__file__).resolve().parent.parent
WRITER = REPO / "scripts" / "write_oci_layout.py"
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
INDEX = "application/vnd.oci.image.index.v1+json"


# --- the layout writer ------------------------------------------------------------------------


def rootfs_tar(path: Path, mtime: int) -> Path:
    """A small root filesystem tar in the shape `tar -C ROOTFS -c .` gives: ./ names, members
    out of name order, and a hard link that sorts before the file it links to."""
    entries: list[tuple[str, bytes | None, bytes]] = [
        ("./", None, tarfile.DIRTYPE),
        ("./usr/", None, tarfile.DIRTYPE),
        ("./usr/bin/", None, tarfile.DIRTYPE),
        ("./usr/bin/perl5.36.0", b"#!perl\n", tarfile.REGTYPE),
        ("./usr/bin/perl", None, tarfile.LNKTYPE),
        ("./usr/bin/bash", b"#!bash\n", tarfile.REGTYPE),
        ("./bin", None, tarfile.SYMTYPE),
        ("./etc/", None, tarfile.DIRTYPE),
        ("./etc/nginx.conf", b"events {}\n", tarfile.REGTYPE),
    ]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.uname, info.gname = kind, mtime, "root", "root"
            info.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.REGTYPE) else 0o777
            if kind == tarfile.LNKTYPE:
                info.linkname = "./usr/bin/perl5.36.0"
            if kind == tarfile.SYMTYPE:
                info.linkname = "usr/bin"
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def write_layout(out: Path, amd64: Path, arm64: Path) -> str:
    written = subprocess.run(
        [
            sys.executable,
            str(WRITER),
            str(out),
            "--platform",
            f"linux/amd64={amd64}",
            "--platform",
            f"linux/arm64/v8={arm64}",
            "--source-date-epoch",
            "1686355200",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return written.stdout.strip()


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / digest.replace(":", "/", 1)).read_bytes()
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    return data


def test_the_layout_names_each_platform_and_its_bytes_do_not_depend_on_file_times(
    tmp_path: Path,
) -> None:
    first = write_layout(
        tmp_path / "first",
        rootfs_tar(tmp_path / "amd64.tar", mtime=1_700_000_000),
        rootfs_tar(tmp_path / "arm64.tar", mtime=1_700_000_000),
    )
    # The same files packed a day later.
    again = write_layout(
        tmp_path / "again",
        rootfs_tar(tmp_path / "amd64-later.tar", mtime=1_700_086_400),
        rootfs_tar(tmp_path / "arm64-later.tar", mtime=1_700_086_400),
    )
    assert first == again
    layout = tmp_path / "first"
    index_bytes = (layout / "index.json").read_bytes()
    assert f"sha256:{hashlib.sha256(index_bytes).hexdigest()}" == first
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(index_bytes)
    assert index["mediaType"] == INDEX
    assert [entry["platform"] for entry in index["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    ]
    for entry in index["manifests"]:
        manifest = json.loads(blob(layout, entry["digest"]))
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        assert platform_name(config) == platform_name(entry["platform"])
        assert config["config"] == {"Cmd": ["nginx", "-g", "daemon off;"]}
        assert config["created"] == config["history"][0]["created"] == "2023-06-10T00:00:00Z"
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        uncompressed = gzip.decompress(blob(layout, layer["digest"]))
        assert config["rootfs"] == {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(uncompressed).hexdigest()}"],
        }
        with tarfile.open(fileobj=io.BytesIO(uncompressed)) as tar:
            names = tar.getnames()
            assert names == sorted(names)
            assert names[0] == "bin"
            link = tar.getmember("usr/bin/perl")
            # The link comes first in name order, so it carries the data and the file links.
            assert link.isreg()
            assert tar.getmember("usr/bin/perl5.36.0").linkname == "usr/bin/perl"
            assert {m.mtime for m in tar.getmembers()} == {1686355200}
            assert {m.uname for m in tar.getmembers()} == {""}
            tar.extractall(tmp_path / "extracted", filter="tar")
    assert (tmp_path / "extracted/usr/bin/perl5.36.0").read_bytes() == b"#!perl\n"
    assert (tmp_path / "extracted/usr/bin/perl").stat().st_nlink == 2


def test_a_platform_without_its_root_filesystem_is_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    written = subprocess.run(
        [sys.executable, str(WRITER), str(tmp_path / "out"), "--platform", "linux/arm64=nope.tar"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 2
    assert "no root filesystem tar at nope.tar" in written.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


# --- the pushed base, on the engine ---------------------------------------------------------


def docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Pulled:
    """What a test pulls and runs from the base; removed again, whatever happens."""

    def __init__(self, base: PlatformBase) -> None:
        self.base = base
        self.label = f"io.shipit.test=platform-base-{uuid.uuid4().hex[:10]}"
        self.image_ids: set[str] = set()

    def pull(self, platform: str) -> None:
        pulled = docker("pull", "-q", "--platform", platform, self.base.reference)
        assert pulled.returncode == 0, pulled.stderr
        # The classic store keeps one image per platform under one tag: note each to remove.
        image_id = docker("image", "inspect", "--format", "{{.Id}}", self.base.reference)
        self.image_ids.add(image_id.stdout.strip())

    def run(self, platform: str, *command: str) -> subprocess.CompletedProcess[str]:
        return docker(
            "run", "--rm", "--label", self.label, "--platform", platform,
            self.base.reference, *command,
        )  # fmt: skip

    def containers(self) -> list[str]:
        return docker_words("ps", "-aq", "--filter", f"label={self.label}")

    def remove(self) -> None:
        leftovers = self.containers()
        if leftovers:
            docker("rm", "-f", *leftovers)
        wait_until(lambda: not self.containers(), 30, what=f"containers labelled {self.label}")
        docker("rmi", self.base.reference)
        for image_id in self.image_ids:
            # An image the engine also holds under another name (a build's base) stays.
            if not self.other_names(image_id):
                docker("rmi", image_id)
        kept = [
            i
            for i in self.image_ids
            if docker("image", "inspect", i).returncode == 0 and not self.other_names(i)
        ]
        assert not kept, f"images left behind: {kept}"

    def other_names(self, image_id: str) -> list[str]:
        shown = docker(
            "image", "inspect", "--format", "{{json .RepoTags}} {{json .RepoDigests}}", image_id
        )
        if shown.returncode != 0:
            return []
        tags, digests = (json.loads(part) or [] for part in shown.stdout.split())
        return [
            name
            for name in (*tags, *digests)
            if _repository(name) != _repository(self.base.reference)
        ]


@pytest.fixture
def pulled(engine: Engine, multi_platform_base: PlatformBase) -> Iterator[Pulled]:
    images = Pulled(multi_platform_base)
    yield images
    images.remove()


@pytest.mark.parametrize(("platform", "machine"), MACHINES.items())
def test_each_platform_pulled_from_the_index_runs_as_its_own_machine(
    pulled: Pulled, platform: str, machine: str
) -> None:
    pulled.pull(platform)
    ran = pulled.run(platform, "uname", "-m")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == machine


def test_the_arm64_base_runs_its_nginx_under_emulation(pulled: Pulled) -> None:
    pulled.pull("linux/arm64")
    ran = pulled.run("linux/arm64", "nginx", "-v")
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.startswith("nginx version: nginx/"), ran.stderr


def test_the_tag_names_an_index_of_exactly_the_two_platforms(
    multi_platform_base: PlatformBase,
) -> None:
    # skopeo: a client that is not shipit's, nor the engine's, reads what the tag names.
    inspected = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{multi_platform_base.reference}"],
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert f"sha256:{hashlib.sha256(inspected.stdout).hexdigest()}" == (
        multi_platform_base.index_digest
    )
    index = json.loads(inspected.stdout)
    assert index["mediaType"] == INDEX
    listed = {platform_name(entry["platform"]): entry["digest"] for entry in index["manifests"]}
    assert listed == {
        "linux/amd64": multi_platform_base.digest_of("linux/amd64"),
        "linux/arm64/v8": multi_platform_base.digest_of("linux/arm64"),
    }


def _repository(name: str) -> str:
    """host/path of a name with a tag or digest."""
    name = name.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
