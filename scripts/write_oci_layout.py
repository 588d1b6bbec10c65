#!/usr/bin/env python3
"""Writes an OCI image layout of one multi-platform image from a root filesystem tar per
platform, as a registry would serve an official image: index.json is the image index that
names each platform's manifest with its `platform`; each manifest has one gzip layer (the
whole root filesystem) and a config with that platform's os, architecture and variant.

    write_oci_layout.py OUT --platform linux/amd64=amd64.tar --platform linux/arm64/v8=arm64.tar
        [--cmd JSON] [--created-by TEXT] [--source-date-epoch SECONDS]

The same inputs give the same bytes, so the same digests: members in name order, every file
time, owner name and gzip header fixed, JSON with sorted keys. Standard library only, so the
test environment can run it with the system's python3 before any venv exists. OUT is
replaced as a whole (written beside it, then renamed), so a reader never sees half of one.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Debian 12 (bookworm)'s release day: the base's own time, whenever the layout is written.
DEFAULT_EPOCH = 1686355200
GZIP_LEVEL = 6
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant] (linux/arm64/v8)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def as_json(self) -> dict[str, str]:
        fields = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            fields["variant"] = self.variant
        return fields


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class HashingWriter:
    """A write-only file that passes bytes on and counts and hashes them on the way."""

    def __init__(self, target: Writable) -> None:
        self._target = target
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._sha256.update(data)
        self.size += len(data)
        self._target.write(data)
        return len(data)

    def flush(self) -> None:
        self._target.flush()

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return f"sha256:{self._sha256.hexdigest()}"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _normalized_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") if name not in (".", "") else ""


def _hardlink_carriers(members: dict[str, tarfile.TarInfo]) -> dict[str, str]:
    """For every name that is one file with others: the name that carries the data.

    Hard links must follow the member they point at; in name order a link may come first,
    so the smallest name of each group carries the data and the others link to it.
    """
    groups: dict[str, set[str]] = {}
    for name, member in members.items():
        if member.islnk():
            target = _normalized_name(member.linkname)
            if target not in members or not members[target].isreg():
                raise ValueError(f"hard link {name} points at {target}, not a file in the tar")
            groups.setdefault(target, {target}).add(name)
    return {name: min(group) for group in groups.values() for name in group}


def _layer_members(
    source: tarfile.TarFile, label: Path, epoch: int
) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarInfo | None]]:
    """Each member normalized, in name order, with the source member holding its data."""
    members = [m for m in source.getmembers() if _normalized_name(m.name)]
    by_name = {_normalized_name(m.name): m for m in members}
    if len(by_name) != len(members):
        raise ValueError(f"{label} names a member twice")
    carriers = _hardlink_carriers(by_name)
    # The one regular member of each group of hard links, by the name that carries it now.
    file_of = {carriers[name]: m for name, m in by_name.items() if name in carriers and m.isreg()}
    for name in sorted(by_name):
        original = by_name[name]
        info = tarfile.TarInfo(name)
        info.mode, info.uid, info.gid = original.mode, original.uid, original.gid
        info.uname = info.gname = ""
        info.mtime = epoch
        data: tarfile.TarInfo | None = None
        if name in carriers and carriers[name] != name:
            info.type, info.linkname = tarfile.LNKTYPE, carriers[name]
        elif name in carriers or original.isreg():
            data = file_of.get(name, original)
            info.type, info.size, info.mode = tarfile.REGTYPE, data.size, data.mode
        else:
            info.type = original.type
            info.linkname = original.linkname if original.issym() else ""
            info.devmajor, info.devminor = original.devmajor, original.devminor
        yield info, data


def write_layer(rootfs_tar: Path, blobs: Path, epoch: int) -> tuple[Descriptor, str]:
    """The gzip layer of `rootfs_tar` into `blobs`: its descriptor and its diff_id."""
    partial = blobs / f".partial-{os.getpid()}"
    with (
        tarfile.open(rootfs_tar) as source,
        partial.open("wb") as out,
    ):
        compressed = HashingWriter(out)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0
        ) as gz:
            uncompressed = HashingWriter(gz)
            # Writing, TarFile only calls write() and tell(): a stream is enough.
            with tarfile.TarFile(
                fileobj=uncompressed,  # type: ignore[arg-type]
                mode="w",
                format=tarfile.PAX_FORMAT,
            ) as layer:
                for info, data in _layer_members(source, rootfs_tar, epoch):
                    layer.addfile(info, source.extractfile(data) if data else None)
    digest = compressed.digest
    partial.rename(blobs / digest.removeprefix("sha256:"))
    return Descriptor(LAYER, digest, compressed.size), uncompressed.digest


def write_blob(blobs: Path, media_type: str, data: bytes) -> Descriptor:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return Descriptor(media_type, f"sha256:{digest}", len(data))


def write_platform(
    blobs: Path,
    platform: Platform,
    rootfs_tar: Path,
    *,
    cmd: list[str],
    created_by: str,
    epoch: int,
) -> Descriptor:
    """One platform's layer, config and manifest; the manifest's descriptor."""
    layer, diff_id = write_layer(rootfs_tar, blobs, epoch)
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        **platform.as_json(),
        "created": created,
        "config": {"Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": created_by}],
    }
    config_descriptor = write_blob(blobs, CONFIG, canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_descriptor.as_json(),
        "layers": [layer.as_json()],
    }
    return write_blob(blobs, MANIFEST, canonical_json(manifest))


def write_layout(
    out: Path,
    platforms: list[tuple[Platform, Path]],
    *,
    cmd: list[str],
    created_by: str,
    epoch: int,
) -> str:
    """The layout at `out` (replaced); the digest of its image index."""
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    blobs = staging / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    entries = []
    for platform, rootfs_tar in platforms:
        manifest = write_platform(
            blobs, platform, rootfs_tar, cmd=cmd, created_by=created_by, epoch=epoch
        )
        entries.append({**manifest.as_json(), "platform": platform.as_json()})
    index = canonical_json({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries})
    (staging / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    (staging / "index.json").write_bytes(index)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return f"sha256:{hashlib.sha256(index).hexdigest()}"


def _platform_argument(text: str) -> tuple[Platform, Path]:
    platform, separator, path = text.partition("=")
    if not separator or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not PLATFORM=ROOTFS.tar")
    try:
        return Platform.parse(platform), Path(path)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--platform", type=_platform_argument, action="append", required=True, dest="platforms"
    )
    parser.add_argument("--cmd", default='["nginx", "-g", "daemon off;"]', help="JSON list")
    parser.add_argument("--created-by", default="write_oci_layout.py")
    parser.add_argument(
        "--source-date-epoch",
        type=int,
        default=int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH)),
    )
    args = parser.parse_args(argv)
    cmd = json.loads(args.cmd)
    if not isinstance(cmd, list) or not all(isinstance(part, str) for part in cmd):
        parser.error(f"--cmd {args.cmd!r} is not a JSON list of strings")
    for _, rootfs_tar in args.platforms:
        if not rootfs_tar.is_file():
            parser.error(f"no root filesystem tar at {rootfs_tar}")
    digest = write_layout(
        args.out,
        args.platforms,
        cmd=cmd,
        created_by=args.created_by,
        epoch=args.source_date_epoch,
    )
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
