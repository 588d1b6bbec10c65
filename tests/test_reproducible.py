"""The image shipit writes itself is the same bytes from the same commit and settings, on any
checkout at any time: its times come from SOURCE_DATE_EPOCH or the commit, and a re-run finds
its own digest in the registry without uploading, moving a tag or reading a config.

On the local classic engine, where shipit writes and uploads the image of the local base
itself; the containerd image store's engine writes only an image whose base it pulled from a
registry by digest (the two-platform case here, which runs there too), and builds one of the
local base with docker build, whose image carries its build time.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.faultproxy import FaultProxy, Seen, is_blob_read
from harness.services import RegistryService, free_port
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import (
    HUB_USER,
    Project,
    Result,
    copy_example,
    remove_project_leftovers,
    wait_for_the_next_second,
)
from tests.leftovers import shipit_uploads, shipit_uploads_from_a_registry
from tests.test_publish import commit_all, registries, report_of


@dataclass
class Clone:
    """A fresh clone of the project's commit, with its own caches (the blob store and the
    ECR token cache live in XDG_CACHE_HOME, the input index and smoke passes in .shipit/)."""

    project: Project
    cache: Path

    def ship(self, proxy: FaultProxy, repository: str, token: str, **extra: str) -> Result:
        env = self.project.env(
            SHIPIT_DOCKERHUB_REGISTRY=proxy.host,
            SHIPIT_DOCKERHUB_REPOSITORY=repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=token,
            SHIPIT_PORT=str(free_port()),
            SHIPIT_PUSH_ATTEMPTS="1",
            XDG_CACHE_HOME=str(self.cache),
            **extra,
        )
        return self.project.shipit("ship", "--to", "dockerhub", "--json", env=env)


@pytest.fixture
def clones(tmp_path: Path, engine: Engine) -> Iterator[tuple[Clone, Clone]]:
    origin = copy_example(tmp_path / "origin")
    commit_all(origin)
    image = f"shipit-test/{uuid.uuid4().hex[:10]}"  # the same settings in both clones
    made = []
    for name in ("first", "second"):
        folder = tmp_path / name / "site-project"
        subprocess.run(["git", "clone", "-q", str(origin), str(folder)], check=True)
        made.append(Clone(Project(folder, image), tmp_path / name / "cache"))
    yield made[0], made[1]
    remove_project_leftovers(image)


@pytest.fixture
def proxy(hub_registry: RegistryService) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", hub_registry.port) as recording:
        yield recording


def changes(requests: list[Seen]) -> list[Seen]:
    """The requests that write to the registry or read a blob (a config, a layer)."""
    return [
        seen
        for seen in requests
        if seen.method not in ("GET", "HEAD") or is_blob_read(seen.method, seen.path)
    ]


def test_two_fresh_clones_ship_the_same_digest_and_the_second_changes_nothing(
    engine: Engine, clones: tuple[Clone, Clone], proxy: FaultProxy, hub_token: str
) -> None:
    assert shipit_uploads(), "shipit writes and uploads the image on a local classic engine"
    first_clone, second_clone = clones
    repository = f"repro/site-{uuid.uuid4().hex[:8]}"
    started = time.time()
    first = first_clone.ship(proxy, repository, hub_token)
    assert first.code == 0, first.output
    shipped = report_of(first)
    entry = registries(shipped)["dockerhub"]
    assert entry["status"] == "pushed" and entry["bytes_uploaded"] > 0

    # Another runner: no image of the project in the engine, later on the clock.
    remove_project_leftovers(first_clone.project.image)
    wait_for_the_next_second(started)
    mark = len(proxy.seen())
    second = second_clone.ship(proxy, repository, hub_token)
    assert second.code == 0, second.output
    again = report_of(second)
    assert again["build"]["built"] is True
    assert again["run"]["smoke"]["ok"] is True  # the rebuilt image was smoke-tested itself
    assert again["build"]["image_id"] == shipped["build"]["image_id"]
    rerun = registries(again)["dockerhub"]
    assert rerun["digest"] == entry["digest"]
    assert rerun["status"] == "unchanged" and rerun["bytes_uploaded"] == 0
    assert [tag["status"] for tag in rerun["tags"]] == ["unchanged"] * len(rerun["tags"])
    assert "already holds this image; nothing to upload" in second.stderr
    assert "built from the same input" not in second.stderr
    requests = proxy.seen()[mark:]
    assert requests, "the second ship asked the registry nothing"
    assert changes(requests) == [], requests  # no upload, no manifest PUT, no config read


def test_another_source_date_epoch_is_another_digest_pushed_without_the_label_check(
    engine: Engine, clones: tuple[Clone, Clone], proxy: FaultProxy, hub_token: str
) -> None:
    """The same commit dated otherwise is another image, though its labels name the same
    input: it replaces the tag, and the config the tag held is not read."""
    assert shipit_uploads(), "shipit writes and uploads the image on a local classic engine"
    clone, _ = clones
    repository = f"repro/dated-{uuid.uuid4().hex[:8]}"
    first = clone.ship(proxy, repository, hub_token, SOURCE_DATE_EPOCH="1700000000")
    assert first.code == 0, first.output
    shipped = registries(report_of(first))["dockerhub"]
    config_read = f"GET /v2/{repository}/blobs/{report_of(first)['build']['image_id']}"

    mark = len(proxy.seen())
    second = clone.ship(proxy, repository, hub_token, SOURCE_DATE_EPOCH="1700000001")
    assert second.code == 0, second.output
    replaced = registries(report_of(second))["dockerhub"]
    assert replaced["status"] == "pushed" and replaced["digest"] != shipped["digest"]
    assert "built from the same input" not in second.stderr
    reads = [f"{seen.method} {seen.path}" for seen in proxy.seen()[mark:]]
    assert not [read for read in reads if read.startswith(config_read)], reads


def inspected(reference: str) -> dict[str, Any]:
    shown = subprocess.run(
        ["docker", "image", "inspect", reference], capture_output=True, text=True, check=True
    )
    document: dict[str, Any] = json.loads(shown.stdout)[0]
    return document


def test_source_date_epoch_dates_the_config_the_history_and_the_label(
    engine: Engine, project: Project
) -> None:
    commit_all(project.root)
    dated = {}
    for epoch in ("1700000000", "1700000001"):
        built = project.shipit("build", "--json", env=project.env(SOURCE_DATE_EPOCH=epoch))
        assert built.code == 0, built.output
        assert "from SOURCE_DATE_EPOCH" in built.stderr
        report = json.loads(built.stdout)
        assert report["built"] is True  # the image of another time is not reused
        dated[epoch] = report["image_id"]
    assert dated["1700000000"] != dated["1700000001"]

    image = inspected(dated["1700000000"])
    assert image["Created"] == "2023-11-14T22:13:20Z"
    assert image["Config"]["Labels"]["org.opencontainers.image.created"] == image["Created"]
    base_entries = len(engine.image_history(project.env()["SHIPIT_BASE_IMAGE"]))
    history = engine.image_history(dated["1700000000"])
    added = history[: len(history) - base_entries]  # newest first
    assert added and {entry["Created"] for entry in added} == {1_700_000_000}

    # Unset, the commit's committer time dates it.
    committed = subprocess.run(
        ["git", "-C", str(project.root), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    by_commit = project.shipit("build", "--json", env=project.env(SOURCE_DATE_EPOCH=""))
    assert by_commit.code == 0, by_commit.output
    assert committed != "1700000000"
    newest = engine.image_history(json.loads(by_commit.stdout)["image_id"])[0]
    assert newest["Created"] == int(committed)


def test_a_malformed_source_date_epoch_is_one_line_and_exit_3_with_nothing_built(
    engine: Engine, project: Project
) -> None:
    commit_all(project.root)
    failed = project.shipit("build", env=project.env(SOURCE_DATE_EPOCH="2023-11-14"))
    assert failed.code == ExitCode.CONFIG, failed.output
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "SOURCE_DATE_EPOCH='2023-11-14'" in lines[0], failed.stderr
    assert engine.image(f"{project.image}:latest") is None


def test_two_fresh_clones_ship_the_same_index_of_two_platforms(
    engine: Engine,
    clones: tuple[Clone, Clone],
    proxy: FaultProxy,
    hub_token: str,
    multi_platform_base: Any,
) -> None:
    """Base layers copied from the base's registry, the site layer and the configs written
    the same way: the second clone's index is the first's, found without a change."""
    assert shipit_uploads_from_a_registry(), "shipit writes and uploads it on a local engine"
    first_clone, second_clone = clones
    repository = f"repro/multi-{uuid.uuid4().hex[:8]}"
    both = {
        "SHIPIT_BASE_IMAGE": multi_platform_base.reference,
        "SHIPIT_PLATFORMS": "linux/amd64,linux/arm64",
    }
    started = time.time()
    first = first_clone.ship(proxy, repository, hub_token, **both)
    assert first.code == 0, first.output
    entry = registries(report_of(first))["dockerhub"]
    assert entry["status"] == "pushed"

    remove_project_leftovers(first_clone.project.image)
    wait_for_the_next_second(started)
    mark = len(proxy.seen())
    second = second_clone.ship(proxy, repository, hub_token, **both)
    assert second.code == 0, second.output
    again = report_of(second)
    assert len(again["runs"]) == 2  # each platform rebuilt and smoke-tested again
    rerun = registries(again)["dockerhub"]
    assert rerun["digest"] == entry["digest"]
    assert rerun["status"] == "unchanged" and rerun["bytes_uploaded"] == 0
    assert changes(proxy.seen()[mark:]) == []


def test_fingerprinted_and_precompressed_files_are_the_same_bytes_in_two_clones(
    engine: Engine, clones: tuple[Clone, Clone]
) -> None:
    """Each clone renders the .gz files and the fingerprinted names itself (and learns on
    its own that the base has gzip_static): the image is the same bytes, so the same id."""
    assert shipit_uploads(), "shipit writes the image itself on a local classic engine"
    built = {}
    saved = b""
    for clone in clones:
        result = clone.project.shipit("build", "--json")
        assert result.code == 0, result.output
        report = json.loads(result.stdout)
        assert report["built"] is True
        built[clone.project.root] = report["image_id"]
        assert (clone.project.root / ".shipit" / "base-nginx.json").is_file()
        saved = subprocess.run(
            ["docker", "save", report["image_id"]], capture_output=True, check=True
        ).stdout
        # Removed, so the second clone writes its own image rather than reuse this one.
        subprocess.run(["docker", "rmi", "-f", report["image_id"]], capture_output=True, check=True)
    first, second = built.values()
    assert first == second
    names = _layer_names(saved)
    assert any(
        re.fullmatch(r"srv/shipit/site/static/style\.[0-9a-f]{12}\.css\.gz", n) for n in names
    )
    assert "srv/shipit/site/index.html.gz" in names


def _layer_names(saved: bytes) -> set[str]:
    names: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(saved)) as archive:
        for member in archive:
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                extracted = archive.extractfile(member)
                if extracted is None:
                    continue
                data = extracted.read()
                if data[257:262] != b"ustar":
                    continue
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    names.update(layer.getnames())
    return names
