"""shipit's own upload of an image: the parallel gzip, the blob store, and pushes whose
images the Docker engine pulls back intact."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import platform
import random
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shipit.engine import Engine
from shipit.errors import ExitCode, PushError
from shipit.push import blobs, compress
from shipit.push.blobs import Blob, BlobStore
from shipit.push.compress import BLOCK, gzip_blocks, read_blocks
from shipit.push.image_blobs import ImageBlobs
from tests.conftest import (
    HUB_USER,
    PublishProject,
    Result,
    remove_project_leftovers,
    shipit_containers,
)
from tests.leftovers import shipit_uploads
from tests.test_publish import registries, report_of, served_image_ids


def compressed(
    data: bytes, workers: int = 2, compressor: compress.Compressor = compress.COMPRESSOR
) -> bytes:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return b"".join(gzip_blocks(read_blocks(io.BytesIO(data)), pool, compressor))


def sample(size: int, seed: int = 7) -> bytes:
    """Half text, half random: what a layer of pages and images looks like to gzip."""
    text = words(size // 2, seed)
    return text + random.Random(-seed).randbytes(size - len(text))


def words(size: int, seed: int = 7) -> bytes:
    """Text of 500 random words: what gzip shrinks most in a layer."""
    generator = random.Random(seed)
    vocabulary = [generator.randbytes(generator.randint(2, 9)).hex() for _ in range(500)]
    return " ".join(generator.choice(vocabulary) for _ in range(size // 4)).encode()[:size]


@pytest.mark.parametrize(
    "size", [0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345, 4 * BLOCK], ids=str
)
def test_the_gzip_is_one_member_that_any_reader_inflates_to_the_input(size: int) -> None:
    data = sample(size)  # its random half spans whole blocks from 2 MiB on: stored ones
    blob = compressed(data)
    assert gzip.decompress(blob) == data
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(blob) == data
    assert inflater.eof and inflater.unused_data == b""  # one member, nothing after it
    tested = subprocess.run(["gzip", "-t"], input=blob, capture_output=True, check=False)
    assert tested.returncode == 0, tested.stderr


def test_the_gzip_is_the_same_whatever_the_workers_and_reads() -> None:
    data = sample(5 * BLOCK + 99)

    class Trickle(io.BytesIO):
        """Reads that return less than asked, as a socket's do."""

        def read(self, size: int | None = -1) -> bytes:
            return super().read(min(size if size and size > 0 else BLOCK, 70_001))

    one = compressed(data, workers=1)
    assert compressed(data, workers=4) == one
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert b"".join(gzip_blocks(read_blocks(Trickle(data)), pool)) == one
    assert compressed(data, workers=2) == one  # and on every run
    assert one[4:8] == b"\0\0\0\0"  # no time in the header


def test_blocks_cost_little_size_against_one_stream() -> None:
    data = sample(6 * BLOCK)
    whole = zlib.compressobj(compress.ZLIB_LEVEL, zlib.DEFLATED, 31)
    reference = len(whole.compress(data) + whole.flush())
    assert len(compressed(data)) <= reference * 1.01


def test_a_block_that_does_not_shrink_is_stored_and_one_that_does_is_deflated() -> None:
    noise = random.Random(5).randbytes(3 * BLOCK)
    stored = compressed(noise)
    overhead = len(stored) - len(noise)
    heads = 3 * -(-BLOCK // 0xFFFF)  # stored deflate blocks hold 64 KiB at most
    assert overhead == 10 + 5 * heads + 8  # gzip header, 5 bytes per head, gzip trailer
    assert noise[:0xFFFF] in stored  # as it is, not deflated
    # Text between the samples of a block of noise: the block shrinks, so it is deflated.
    mixed = bytearray(noise[:BLOCK])
    mixed[300_000:700_000] = words(400_000)
    assert len(compressed(bytes(mixed))) < BLOCK * 0.75
    assert gzip.decompress(stored) == noise


def test_the_blobs_do_not_depend_on_which_compressors_are_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The blobs name the image's manifest digest, which must be the same on every machine:
    one deflater (CPython's zlib, portable C), whatever else imports."""
    data = sample(3 * BLOCK)
    here = compressed(data), compress.BLOB_FORMAT
    for faster in ("isal", "isal.isal_zlib", "zlib_ng"):
        monkeypatch.setitem(sys.modules, faster, None)
    reloaded = importlib.reload(compress)
    try:
        assert (compressed(data, compressor=reloaded.COMPRESSOR), reloaded.BLOB_FORMAT) == here
    finally:
        monkeypatch.undo()
        importlib.reload(compress)


# What shipit's gzip of a fixed input is, per format: a change of the rules that gives other
# bytes must come with another format, which the learned digests are kept under.
KNOWN_BLOBS = {
    "gzip-zlib-1.2.13-1-1048576-store98x4x16384-52f54db56cbe": (
        "sha256:ca46ab3570f5fad87eb31906b4c63b9fd73052aa09d25d4d76b99f3347a8e158"
    ),
}


def test_a_fixed_input_gives_the_blob_recorded_for_its_format() -> None:
    if compress.BLOB_FORMAT not in KNOWN_BLOBS:
        pytest.skip(f"no blob recorded for {compress.BLOB_FORMAT} (another zlib)")
    data = sample(2 * BLOCK + 777, seed=3) + random.Random(9).randbytes(BLOCK)
    assert digest_of(compressed(data)) == KNOWN_BLOBS[compress.BLOB_FORMAT]


def test_the_format_names_zlib_its_version_level_block_rule_and_output(tmp_path: Path) -> None:
    assert compress.COMPRESSOR.format == blobs.BLOB_FORMAT
    level, block = compress.ZLIB_LEVEL, BLOCK
    assert blobs.BLOB_FORMAT.startswith(f"gzip-zlib-{zlib.ZLIB_RUNTIME_VERSION}-{level}-{block}-")
    assert platform.machine() not in blobs.BLOB_FORMAT  # the same blobs on every machine
    assert compress.Compressor(level=4).format != blobs.BLOB_FORMAT
    # A digest learned by another compressor (ISA-L's, or shipit's zlib before) is not trusted.
    diff_id = "sha256:" + "7" * 64
    entry = {diff_id: {"digest": "sha256:" + "8" * 64, "size": 5}}
    for learned_by in ("gzip-isal-1.9.1-1-1048576-x86_64", "gzip-zlib-1.2.13-4-1048576-x86_64"):
        (tmp_path / "layers.json").write_text(json.dumps({learned_by: entry}))
        assert BlobStore(tmp_path).layer(diff_id) is None


def test_the_store_learns_digests_and_keeps_small_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    diff_id = "sha256:" + "1" * 64
    assert store.layer(diff_id) is None
    store.learn(diff_id, Blob("sha256:" + "2" * 64, 10))
    assert store.layer(diff_id) == Blob("sha256:" + "2" * 64, 10, None)  # known, not kept

    layer = sample(3000)
    diff_id = digest_of(layer)
    with ThreadPoolExecutor(max_workers=2) as pool:
        kept = store.keep_layer(diff_id, layer, pool)
    assert store.layer(diff_id) == kept
    assert kept.path is not None and gzip.decompress(kept.path.read_bytes()) == layer
    assert kept.digest == "sha256:" + hashlib.sha256(kept.path.read_bytes()).hexdigest()
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700

    config = b'{"architecture":"amd64"}'
    digest = store.keep(config).digest
    assert store.kept(digest) == config
    store.path_of(digest).write_bytes(b'{"architecture":"arm64"}')
    assert store.kept(digest) is None  # bytes that no longer hash to their name are not used


def test_a_damaged_or_foreign_layer_list_is_ignored(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    diff_id = "sha256:" + "3" * 64
    (tmp_path / "layers.json").write_text("{not json")
    assert store.layer(diff_id) is None
    entry = {diff_id: {"digest": "sha256:" + "4" * 64, "size": 5}}
    (tmp_path / "layers.json").write_text(json.dumps({"gzip-9-4096": entry}))
    assert store.layer(diff_id) is None  # another compression gives other blobs
    store.learn("sha256:" + "5" * 64, Blob("sha256:" + "6" * 64, 7))
    assert json.loads((tmp_path / "layers.json").read_text()).keys() == {blobs.BLOB_FORMAT}


def test_the_store_forgets_the_least_recently_used_beyond_its_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "STORE_CAP_BYTES", 2500)
    store = BlobStore(tmp_path)
    first = store.keep(b"a" * 1000)
    os.utime(first.path, (1, 1))  # type: ignore[arg-type]
    second = store.keep(b"b" * 1000)
    third = store.keep(b"c" * 1000)
    assert store.kept(first.digest) is None
    assert store.kept(second.digest) == b"b" * 1000
    assert store.kept(third.digest) == b"c" * 1000


def test_a_killed_pushs_temporary_folder_goes_after_a_day(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    abandoned, recent = tmp_path / "push-old", tmp_path / "push-new"
    for folder in (abandoned, recent):
        folder.mkdir()
        (folder / "layer-x").write_bytes(b"partial")
    os.utime(abandoned, (1, 1))
    store.forget_abandoned_pushes()
    assert not abandoned.exists()
    assert recent.exists()  # perhaps another shipit's push, still running


# -- pushes through real registries, pulled back by the engine --------------------------


def uploaded_layers(result: Result, registry: str) -> list[str]:
    return [
        line.split("uploaded layer ", 1)[1].split()[0]
        for line in result.stderr.splitlines()
        if f"{registry}: uploaded layer " in line
    ]


@pytest.fixture
def blob_cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_shipit_uploads_what_the_engine_pulls_back_as_the_same_image(
    engine: Engine, publish_project: PublishProject, blob_cache: Path
) -> None:
    # make test runs this file on the local classic engine only, where shipit uploads.
    assert shipit_uploads(), "shipit uploads only on a local engine with the classic store"
    project = publish_project
    assert project.hub and project.ecr
    env = project.env(XDG_CACHE_HOME=str(blob_cache))
    first = project.shipit("ship", "--json", env=env)
    assert first.code == 0, first.output
    image_id = report_of(first)["build"]["image_id"]
    image = engine.image(image_id)
    assert image is not None
    site_layer = image.layers[-1][7:19]
    by_name = registries(report_of(first))
    assert by_name["ecr"]["digest"] == by_name["dockerhub"]["digest"]
    assert by_name["ecr"]["bytes_uploaded"] > 0
    for name in ("ecr", "dockerhub"):
        assert uploaded_layers(first, name)[-1] == site_layer
    assert not [p for p in (blob_cache / "shipit" / "blobs").iterdir() if p.name.startswith("push")]

    # An edit: the push sends the new site layer only, kept by the build (no export).
    style = project.root / "site" / "static" / "style.css"
    style.write_text(style.read_text() + "\n/* edited */\n")
    second = project.shipit("ship", "--json", env=env)
    assert second.code == 0, second.output
    new_id = report_of(second)["build"]["image_id"]
    new_image = engine.image(new_id)
    assert new_image is not None and new_image.layers[:-1] == image.layers[:-1]
    for name in ("ecr", "dockerhub"):
        assert uploaded_layers(second, name) == [new_image.layers[-1][7:19]]
        entry = registries(report_of(second))[name]
        assert 0 < entry["bytes_uploaded"] < 100_000

    reference = f"{project.hub.host}/{project.hub_repository}:latest"
    login = subprocess.run(
        ["docker", "login", project.hub.host, "-u", HUB_USER, "--password-stdin"],
        input=project.hub_token,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_CONFIG": str(blob_cache / "docker")},
        check=False,
    )
    assert login.returncode == 0, login.stderr
    remove_project_leftovers(project.image)
    pulled = subprocess.run(
        ["docker", "--config", str(blob_cache / "docker"), "pull", reference],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert engine.image(reference) is not None
    assert engine.image(reference).id == new_id  # type: ignore[union-attr]
    subprocess.run(["docker", "rmi", reference], capture_output=True, check=False)


def test_an_image_built_by_docker_build_is_exported_once_and_the_engine_push_remains(
    publish_project: PublishProject, blob_cache: Path
) -> None:
    # make test runs this file on the local classic engine only, where shipit uploads.
    assert shipit_uploads(), "shipit uploads only on a local engine with the classic store"
    project = publish_project
    env = project.env(XDG_CACHE_HOME=str(blob_cache), SHIPIT_BUILDER="docker")
    assert project.shipit("build", env=env).code == 0
    pushed = project.shipit("push", "--to", "dockerhub", "--skip-smoke", "--json", env=env)
    assert pushed.code == 0, pushed.output
    assert len(uploaded_layers(pushed, "dockerhub")) == 2  # the base's and the site's
    store = blob_cache / "shipit" / "blobs"
    learned = json.loads((store / "layers.json").read_text())[blobs.BLOB_FORMAT]
    assert len(learned) == 2
    assert not [p for p in store.iterdir() if p.name.startswith("push")]

    # The engine's own push, as remote engines and the containerd store use it.
    other = project.env(
        XDG_CACHE_HOME=str(blob_cache),
        SHIPIT_UPLOADER="engine",
        SHIPIT_DOCKERHUB_REPOSITORY=project.hub_repository + "-engine",
    )
    by_engine = project.shipit("push", "--to", "dockerhub", "--skip-smoke", "--json", env=other)
    assert by_engine.code == 0, by_engine.output
    assert uploaded_layers(by_engine, "dockerhub") == []
    assert registries(report_of(by_engine))["dockerhub"]["status"] == "pushed"
    # Other compressions, so other manifests, of the same image (its config is its id).
    assert project.hub
    image_id = report_of(pushed)["image_id"]
    for repository in (project.hub_repository, project.hub_repository + "-engine"):
        tag = report_of(pushed)["tags"][0]
        assert image_id in served_image_ids(
            project.hub.host, HUB_USER, project.hub_token, repository, tag
        )


def test_a_ship_that_fails_its_smoke_test_leaves_no_compressed_layers(
    publish_project: PublishProject, blob_cache: Path
) -> None:
    """A ship compresses the image's layers while it smoke-tests it; a failure stops that."""
    assert shipit_uploads(), "shipit uploads only on a local engine with the classic store"
    project = publish_project
    nginx_conf = Path(project.root) / "templates" / "nginx.conf.j2"
    nginx_conf.write_text(
        "\n".join(
            line for line in nginx_conf.read_text().splitlines() if "X-Frame-Options" not in line
        )
    )
    failed = project.shipit("ship", env=project.env(XDG_CACHE_HOME=str(blob_cache)))
    assert failed.code == ExitCode.SMOKE, failed.output
    assert shipit_containers(project.image) == []
    store = blob_cache / "shipit" / "blobs"
    assert [p.name for p in store.glob("push-*")] == []


def save_archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class ExportingEngine:
    """Stands in for the engine's export (`docker save`): the archive it sends."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive
        self.exports = 0

    def export_image(self, image_id: str) -> Iterator[bytes]:
        self.exports += 1
        yield self.archive


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("prepared", [False, True], ids=["on demand", "prepared by a ship"])
def test_an_export_that_ends_early_is_one_error_and_is_read_again_next_time(
    tmp_path: Path, prepared: bool
) -> None:
    layer = sample(BLOCK + 5000)
    whole = save_archive({"0a1b/layer.tar": layer})
    engine = ExportingEngine(whole[: BLOCK // 2])
    image = ImageBlobs(engine, "sha256:" + "9" * 64, (digest_of(layer),), BlobStore(tmp_path), 5.0)  # type: ignore[arg-type]
    try:
        if prepared:
            image.prepare()  # in the background, where it fails quietly: the push says why
        with pytest.raises(PushError, match="export of image 999999999999 ended early"):
            image.layer(digest_of(layer))
        engine.archive = whole
        if prepared:
            image.prepare()
        made = image.layer(digest_of(layer))
        assert made.path is not None and gzip.decompress(made.path.read_bytes()) == layer
        assert engine.exports == (3 if prepared else 2)
        image.prepare()  # the store knows the layer now: nothing to export
        assert engine.exports == (3 if prepared else 2)
    finally:
        image.close()
    # The small layer moved into the store; the push's temporary folder is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.json", "sha256"]


@pytest.mark.parametrize("layout", ["docker 20.10", "oci (docker 25)"])
def test_both_save_layouts_give_every_layer_and_the_config_from_one_export(
    tmp_path: Path, layout: str
) -> None:
    base, site = sample(3000, seed=1), sample(2 * BLOCK, seed=2)
    config = json.dumps({"rootfs": {"diff_ids": [digest_of(base), digest_of(site)]}}).encode()
    image_id = digest_of(config)
    if layout == "docker 20.10":
        members = {
            image_id[7:] + ".json": config,
            "1111/layer.tar": base,
            "2222/layer.tar": site,
            "manifest.json": b"[]",
        }
    else:
        members = {
            f"blobs/sha256/{digest_of(b'{}')[7:]}": b"{}",  # a manifest: not a layer
            f"blobs/sha256/{image_id[7:]}": config,
            f"blobs/sha256/{digest_of(base)[7:]}": base,
            f"blobs/sha256/{digest_of(site)[7:]}": site,
            "index.json": b"{}",
        }
    engine = ExportingEngine(save_archive(members))
    layers = (digest_of(base), digest_of(site))
    image = ImageBlobs(engine, image_id, layers, BlobStore(tmp_path), 5.0)  # type: ignore[arg-type]
    try:
        for diff_id, data in zip(layers, (base, site), strict=True):
            blob = image.layer(diff_id)
            assert blob.path is not None and gzip.decompress(blob.path.read_bytes()) == data
            assert blob.digest == digest_of(blob.path.read_bytes())
        assert image.config() == config
    finally:
        image.close()
    assert engine.exports == 1
    learned = BlobStore(tmp_path)
    assert [learned.layer(diff_id) is not None for diff_id in layers] == [True, True]


@pytest.mark.parametrize("held_at", [0, BLOCK + 512], ids=["first byte", "first block"])
def test_blobs_closed_during_their_export_stop_it_and_leave_nothing(
    tmp_path: Path, held_at: int
) -> None:
    """The ship failed its smoke test, say, or the registries held the image already."""
    layer = sample(4 * BLOCK)
    archive = save_archive({"0a1b/layer.tar": layer})
    store = BlobStore(tmp_path)

    engine_ready = threading.Event()  # the engine done writing its save (before a byte)

    class HeldEngine(ExportingEngine):
        """Sends the archive up to `held_at`, and the rest once the blobs are closed (the
        first block), or once the engine is ready (the first byte)."""

        def export_image(self, image_id: str) -> Iterator[bytes]:
            self.exports += 1
            if held_at:
                yield archive[:held_at]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if image._closed if held_at else engine_ready.is_set():
                    break
                time.sleep(0.01)
            yield archive[held_at:]

    engine = HeldEngine(archive)
    image = ImageBlobs(engine, "sha256:" + "9" * 64, (digest_of(layer),), store, 5.0)  # type: ignore[arg-type]
    image.prepare()
    if held_at:  # compressing: close waits for the export to stop
        deadline = time.monotonic() + 10
        while image._temporary is None and time.monotonic() < deadline:
            time.sleep(0.01)
    started = time.monotonic()
    image.close()
    assert time.monotonic() - started < 5
    # Waiting for the engine's first byte, it was not waited for: it stops by itself.
    engine_ready.set()
    assert image._preparing is not None
    image._preparing.join(10)
    assert not image._preparing.is_alive()
    assert engine.exports == 1
    assert store.layer(digest_of(layer)) is None  # not compressed to its end, not learned
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("push-")] == []
