"""The bench's base image, as users have theirs: an image index in a registry (Docker Hub's
nginx offers linux/amd64, linux/arm64 and more), here the linux/amd64 + linux/arm64 nginx
layout that scripts/testenv.sh writes, pushed by harness/platform_base.py into an anonymous
loopback registry of the bench's own.

Every scenario of both sides builds FROM that reference; it is pulled into the engine
beforehand, untimed, as a developer's machine holds the base it built from before. A cold run
gets a base of its own: the same index with one more label in each platform's config (the same
layers, so nothing is uploaded again, but new config digests, so new image ids): no build
step of anything else on this machine can be a cache hit.

The containerd-store engine runs in a network namespace of its own (bench/netns.py), so the
base registry has a twin there, on the same port and with the same content: both engines pull
the same reference, and the sides' Dockerfiles are the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engines import Engine, docker, remove_named
from bench.netns import NetworkNamespace
from harness.loopback import LOOPBACK, free_port
from harness.platform_base import (
    LAYOUT,
    TAG,
    PlatformBase,
    PlatformBaseMissing,
    push_platform_base,
)
from harness.services import RegistryService

BASE_LABEL = "io.shipit.bench.base"


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / digest.replace(":", "/", 1)


def _write_blob(layout: Path, body: bytes) -> tuple[str, int]:
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    _blob(layout, digest).write_bytes(body)
    return digest, len(body)


def variant_layout(source: Path, destination: Path, label: str) -> None:
    """A copy of the OCI layout `source` in `destination` whose every platform's config has
    the label io.shipit.bench.base=`label`; the layers are the same files (linked)."""
    if not (source / "index.json").is_file():
        raise PlatformBaseMissing(
            f"no multi-platform base layout in {source}: run scripts/testenv.sh (as root)"
        )
    shutil.rmtree(destination, ignore_errors=True)
    (destination / "blobs" / "sha256").mkdir(parents=True)
    shutil.copyfile(source / "oci-layout", destination / "oci-layout")
    index = json.loads((source / "index.json").read_bytes())
    entries = []
    for entry in index["manifests"]:
        manifest = json.loads(_blob(source, entry["digest"]).read_bytes())
        config = json.loads(_blob(source, manifest["config"]["digest"]).read_bytes())
        settings = config.setdefault("config", {})
        settings["Labels"] = {**(settings.get("Labels") or {}), BASE_LABEL: label}
        digest, size = _write_blob(destination, _canonical(config))
        manifest["config"] = {**manifest["config"], "digest": digest, "size": size}
        for layer in manifest["layers"]:
            _blob(destination, layer["digest"]).symlink_to(_blob(source, layer["digest"]))
        manifest_digest, manifest_size = _write_blob(destination, _canonical(manifest))
        entries.append({**entry, "digest": manifest_digest, "size": manifest_size})
    index["manifests"] = entries
    (destination / "index.json").write_bytes(_canonical(index))


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Base:
    """One base index the bench pushed: its reference and each platform's manifest."""

    reference: str
    pushed: PlatformBase

    @property
    def repository(self) -> str:
        return self.reference.rsplit(":", 1)[0]


class BaseImages:
    """The base registry (and its twin in `namespace`), what the bench pushed into it, and
    what the engines pulled from it."""

    def __init__(
        self,
        work: Path,
        run_id: str,
        namespace: NetworkNamespace | None,
        failure: type[Exception],
    ) -> None:
        self.work = work / "base"
        self.run_id = run_id
        self.namespace = namespace
        self.failure = failure
        self.registry: RegistryService | None = None
        self.twin: RegistryService | None = None
        self.main: Base | None = None
        self.variants: dict[str, Base] = {}  # by reference
        # What each engine pulled, to remove.
        self.pulled: dict[Engine, set[str]] = {"classic": set(), "containerd": set()}

    @property
    def host(self) -> str:
        assert self.registry is not None
        return self.registry.host

    def start(self) -> Base:
        """The registry (and twin) with the base index under base/nginx:bookworm."""
        for _ in range(20):
            port = free_port()
            if self.namespace is None or self.namespace.call(_port_is_free, port):
                break
        else:
            raise self.failure("no loopback port is free both here and in the engine's namespace")
        self.registry = RegistryService(auth="none", port=port).start()
        if self.namespace is not None:
            self.twin = self.namespace.call(RegistryService(auth="none", port=port).start)
        try:
            pushed = self._push(LAYOUT, TAG)
        except PlatformBaseMissing as missing:
            raise self.failure(str(missing)) from missing
        self.main = Base(pushed.reference, pushed)
        return self.main

    def _push(self, layout: Path, tag: str) -> PlatformBase:
        assert self.registry is not None
        pushed = push_platform_base(self.registry.url, tag=tag, layout=layout)
        if self.twin is not None and self.namespace is not None:
            twin = self.namespace.call(push_platform_base, self.twin.url, tag=tag, layout=layout)
            if twin.index_digest != pushed.index_digest:
                raise self.failure(f"the base registry's twin holds {twin.index_digest}")
        return pushed

    def variant(self, name: str) -> Base:
        """A base of its own for one cold run (see the module's docstring), pushed as
        base/nginx:bench-NAME."""
        layout = self.work / f"layout-{name}"
        variant_layout(LAYOUT, layout, f"{self.run_id}-{name}")
        pushed = self._push(layout, f"bench-{name}")
        shutil.rmtree(layout, ignore_errors=True)
        base = Base(pushed.reference, pushed)
        self.variants[base.reference] = base
        return base

    # Pulls (untimed) and removals

    def _docker(self, engine: Engine, *args: str, check: bool = True) -> None:
        done = docker(engine, *args)
        if check and done.returncode != 0:
            raise self.failure(f"docker {' '.join(args)} ({engine}): {done.stderr.strip()}")

    def pull(self, base: Base, *, every_platform: bool = False, containerd: bool = False) -> None:
        """Into the classic engine: the engine's own platform by tag (what `docker build`
        and a one-platform ship use), with `every_platform` each platform by its manifest
        digest, as a multi-platform ship looks its bases up. With `containerd`, every
        platform into the containerd-store engine too (by tag: one index, all its content)."""
        self._docker("classic", "pull", "-q", base.reference)
        self.pulled["classic"].add(base.reference)
        if every_platform:
            for entry in base.pushed.manifests:
                pinned = f"{base.repository}@{entry.digest}"
                self._docker("classic", "pull", "-q", "--platform", entry.platform, pinned)
                self.pulled["classic"].add(pinned)
        if containerd:
            for entry in base.pushed.manifests:
                self._docker(
                    "containerd", "pull", "-q", "--platform", entry.platform, base.reference
                )
            self.pulled["containerd"].add(base.reference)

    def drop(self, reference: str) -> None:
        """A cold run's base out of both engines again."""
        base = self.variants.pop(reference)
        for engine, references in self.pulled.items():
            mine = sorted(
                reference
                for reference in references
                if reference == base.reference
                or reference.split("@")[-1] in {m.digest for m in base.pushed.manifests}
            )
            if mine:
                self._docker(engine, "rmi", *mine, check=False)
                references.difference_update(mine)

    def close(self) -> None:
        """Every image either engine holds from the base registry (whoever pulled it: shipit
        pulls a platform's base by digest when the engine lacks it), then the registries."""
        try:
            if self.registry is not None:
                prefix = f"{self.host}/"
                engines: tuple[Engine, ...] = (
                    ("classic", "containerd") if self.twin else ("classic",)
                )
                for engine in engines:
                    remove_named(engine, lambda name: name.startswith(prefix))
        finally:
            for registry in (self.registry, self.twin):
                if registry is not None:
                    registry.close()
            shutil.rmtree(self.work, ignore_errors=True)
