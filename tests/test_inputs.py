"""The input index (hashes remembered by stat), streamed contexts, torn files and the size
limit, on real files. No engine needed."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from shipit.errors import ExitCode, SiteTooLargeError
from shipit.inputs import (
    CHUNK_BYTES,
    INDEX_FILE,
    FileIndex,
    TornFileError,
    build_id_from,
    hash_file,
    scan_sources,
)
from shipit.render import _content_mtime, render_site, tar_header
from tests.conftest import copy_example

BASE = "nginx:1.27.3-bookworm"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "p")


def wait_for_a_later_ctime(folder: Path, after_ns: int) -> None:
    """File times come from a coarse clock that may lag time.time_ns(): wait (with a
    deadline) until a new file's ctime is past `after_ns`, so that a write from now on
    gets a later stamp than the index."""
    probe = folder / "clock-probe"
    deadline = time.monotonic() + 5
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > after_ns:
            probe.unlink()
            return
        assert time.monotonic() < deadline, "the file system's clock does not advance"
        time.sleep(0.001)


def index_written_ns(state: Path) -> int:
    return int((state / INDEX_FILE).read_bytes().split(b"\n", 1)[0].split()[2])


def scan(example: Path, state: Path, racy: int = 0) -> tuple[dict[str, str], FileIndex]:
    index = FileIndex(state, racy_nanoseconds=racy)
    sources = scan_sources(example, index=index)
    index.save()
    return {key: source.sha256 for key, source in sources.items()}, index


def test_unchanged_files_are_not_read_again(example: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, index = scan(example, state)
    assert index.files_hashed == len(first) > 5
    wait_for_a_later_ctime(tmp_path, index_written_ns(state))
    again, index = scan(example, state)
    assert again == first
    assert index.files_hashed == 0


def test_a_rewrite_that_keeps_size_and_mtime_is_still_noticed(
    example: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    logo = example / "site" / "static" / "logo.svg"
    first, index = scan(example, state)
    wait_for_a_later_ctime(tmp_path, index_written_ns(state))
    before = logo.stat()
    data = logo.read_bytes()
    logo.write_bytes(data[::-1])  # same size, other bytes
    os.utime(logo, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime
    assert logo.stat().st_mtime_ns == before.st_mtime_ns
    after, index = scan(example, state)
    assert index.files_hashed == 1
    assert after["site/static/logo.svg"] != first["site/static/logo.svg"]


def test_files_changed_just_before_the_index_was_written_are_hashed_again(
    example: Path, tmp_path: Path
) -> None:
    """Racy git: a write in the same time stamp as the index could leave the stat unchanged,
    so recent files are not trusted from the index (default window: 2 s)."""
    state = tmp_path / "state"
    first, _ = scan(example, state, racy=2_000_000_000)
    again, index = scan(example, state, racy=2_000_000_000)
    assert again == first
    assert index.files_hashed == len(first)


def test_added_and_removed_files_change_the_build_id(example: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    index = FileIndex(state)
    original = build_id_from(scan_sources(example, index=index), BASE)
    extra = example / "site" / "static" / "extra.txt"
    extra.write_text("more")
    added = build_id_from(scan_sources(example, index=FileIndex(state)), BASE)
    extra.unlink()
    removed = build_id_from(scan_sources(example, index=FileIndex(state)), BASE)
    assert len({original, added}) == 2
    assert removed == original


def test_a_corrupt_index_is_ignored(example: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, _ = scan(example, state)
    header, records = (state / INDEX_FILE).read_bytes().split(b"\n", 1)
    fields = records.split(b"\0")
    damaged = [*fields[:6], b"damaged", *fields[6:]]  # two whole records, then one field more
    (state / INDEX_FILE).write_bytes(header + b"\n" + b"\0".join(damaged))
    again, index = scan(example, state)
    assert again == first
    assert index.files_hashed == len(first) - 2  # the two records before the damage count


def test_the_index_is_read_in_blocks_that_cut_records_anywhere(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of a few bytes split records (and the hashes in them) at every possible place:
    an unchanged site is still trusted whole, and a removed, an added and a changed file
    are still found."""
    state = tmp_path / "state"
    first, _ = scan(example, state)
    wait_for_a_later_ctime(tmp_path, index_written_ns(state))
    for block in (1, 7, 64, 97):
        monkeypatch.setattr("shipit.inputs.CHUNK_BYTES", block)
        again, index = scan(example, state)
        assert again == first
        assert index.files_hashed == 0
    (example / "site" / "static" / "logo.svg").unlink()
    (example / "site" / "static" / "added.txt").write_text("new")
    (example / "templates" / "index.html.j2").write_text("{{ site.title }} changed")
    monkeypatch.setattr("shipit.inputs.CHUNK_BYTES", 7)
    after, index = scan(example, state)
    assert index.files_hashed == 2
    assert set(after) == set(first) - {"site/static/logo.svg"} | {"site/static/added.txt"}
    assert after["templates/index.html.j2"] != first["templates/index.html.j2"]
    assert {
        k: v for k, v in after.items() if k in first and not k.startswith("templates/index")
    } == {k: v for k, v in first.items() if k in after and not k.startswith("templates/index")}


def test_a_file_written_between_listing_and_reading_is_torn(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(b"old" * 1000)
    listed = page.stat()
    page.write_bytes(b"new" * 1001)
    with pytest.raises(TornFileError, match=r"site/static/page\.html changed while shipit"):
        hash_file(str(page), "site/static/page.html", listed)


def test_the_context_streams_as_tarfile_would_write_it(example: Path) -> None:
    (example / "site" / "static" / "big.bin").write_bytes(os.urandom(3 * CHUNK_BYTES + 7))
    site = render_site(example, BASE)
    labels = {"a.label": "one", "io.shipit.context-digest": site.context_digest}
    chunks = list(site.tar_chunks(labels))
    assert max(len(chunk) for chunk in chunks) <= CHUNK_BYTES + tarfile.RECORDSIZE

    expected = io.BytesIO()
    with (
        tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar,
        tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as streamed,
    ):
        for member in streamed.getmembers():
            data = streamed.extractfile(member)
            assert data is not None
            tar.addfile(member, data)
    assert b"".join(chunks) == expected.getvalue()
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as streamed:
        member = streamed.extractfile("shipit/site/static/big.bin")
        assert member is not None
        assert member.read() == (example / "site" / "static" / "big.bin").read_bytes()


@pytest.mark.parametrize("settled", [True, False], ids=["checked by stat", "checked by hash"])
@pytest.mark.parametrize("change", ["same size", "grown", "shrunk", "same size and mtime"])
def test_a_static_file_changed_while_streaming_ends_the_context(
    example: Path, tmp_path: Path, change: str, settled: bool
) -> None:
    """A file last changed well before the listing (settled) is checked by its stat, any
    other by hashing what was read; racy_nanoseconds=0 makes every file settled."""
    big = example / "site" / "static" / "big.bin"
    big.write_bytes(b"a" * (3 * CHUNK_BYTES))
    index = FileIndex(None, racy_nanoseconds=0 if settled else 2_000_000_000)
    site = render_site(example, BASE, sources=scan_sources(example, index=index))
    assert dict(site.files.static())["shipit/site/static/big.bin"].settled is settled
    chunks = site.tar_chunks()
    seen = 0
    while seen < CHUNK_BYTES:  # the upload is under way, within big.bin
        seen += len(next(chunks))
    wait_for_a_later_ctime(tmp_path, big.stat().st_ctime_ns)
    before = big.stat()
    with big.open("r+b") as stream:
        if change == "grown":
            stream.seek(0, io.SEEK_END)
            stream.write(b"tail")
        elif change == "shrunk":
            stream.truncate(2 * CHUNK_BYTES)
        else:
            stream.seek(2 * CHUNK_BYTES)
            stream.write(b"b")
    if change == "same size and mtime":
        os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))
    sent = []
    with pytest.raises(TornFileError) as caught:
        for chunk in chunks:
            sent.append(chunk)
    assert sum(map(len, sent)) + seen < 3 * CHUNK_BYTES  # the file never went out whole
    assert caught.value.exit_code == ExitCode.TEMPLATE
    assert caught.value.one_line().startswith(
        "site/static/big.bin changed while shipit was reading it"
    )


def test_a_site_over_the_limit_is_refused_from_its_listing(example: Path, tmp_path: Path) -> None:
    (example / "site" / "static" / "big.bin").write_bytes(b"x" * 20_000)
    state = tmp_path / "state"
    index = FileIndex(state)
    with pytest.raises(SiteTooLargeError) as caught:
        scan_sources(example, index=index, max_size=10_000)
    line = caught.value.one_line()
    assert "over the limit of 10.0 KB (setting max_site_size)" in line
    assert "SHIPIT_MAX_SITE_SIZE" in line
    assert caught.value.exit_code == ExitCode.TEMPLATE
    assert index.files_hashed == 0
    assert scan_sources(example, max_size=30_000)


@pytest.mark.parametrize("name", ["a", "shipit/site/static/x.bin", "x" * 100, "y" * 101, "é/ü.txt"])
@pytest.mark.parametrize("size", [0, 511, 512, 10**9, 8**11 - 1, 8**11])
def testtar_headers_are_the_ones_tarfile_writes(name: str, size: int) -> None:
    sha256 = hashlib.sha256(f"{name} {size}".encode()).hexdigest()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, _content_mtime(sha256)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert tar_header(name, size, sha256) == expected
