"""Multi-platform scenarios of the bench (bench/README.md, "Multi-platform ships").

- Cold: `shipit ship --platform linux/amd64,linux/arm64` (both images built, run and
  smoke-tested, the arm64 one under QEMU, then pushed as one index to both registries) against
  bench/buildx_pipeline.sh, `docker buildx build --platform linux/amd64,linux/arm64 --push` of
  the same rendered context on the containerd-store engine, which tests nothing. That engine
  lives in a network namespace of its own, so buildx's registries and moto are started in
  there (bench/netns.py), fresh for every run as shipit's are here.
- No change: the multi-platform ship again, nothing changed, against the one-platform
  no-change ship of the same site; both shipit, both to one pair of registries (repositories of
  their own), with warm caches.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import (
    BenchFailure,
    Registries,
    Sample,
    Timed,
    ecr_token_from_cache,
    plain_steps,
    run_quiet,
    say,
    tail,
    timed,
)
from bench.engines import (
    CONTAINERD_HOST,
    BuildCacheUnreadable,
    buildx_plugin,
    prune_added_build_cache,
    remove_named,
)
from harness.registry_reader import RegistryReader
from harness.services import MotoService, RegistryService
from shipit.errors import ShipitError
from shipit.platforms import Platform

if TYPE_CHECKING:
    from bench.netns import NetworkNamespace
    from bench.run import Bench

PLATFORMS = ("linux/amd64", "linux/arm64")
BUILDX_SCRIPT = Path(__file__).resolve().with_name("buildx_pipeline.sh")
MULTI_SCENARIOS = ("multi_cold", "multi_nochange")
COLD_SIDES = ("shipit", "buildx")
NOCHANGE_SIDES = ("multi", "single")


def platform_name(fields: Any) -> str:
    """A platform as PLATFORMS spells it when it is one of them (linux/arm64 for an index
    entry that says arm64/v8, or none), else docker's spelling."""
    platform = Platform.of(fields) if isinstance(fields, Mapping) else Platform.parse(str(fields))
    for name in PLATFORMS:
        if Platform.parse(name).matches(platform):
            return name
    return str(platform)


@dataclass(frozen=True)
class ServedIndex:
    """What one registry serves under both tags: one index, its images' platforms and each
    one's config digest, and how many entries are no image (buildx's attestations)."""

    digest: str
    configs: dict[str, str]
    other_entries: int

    @property
    def platforms(self) -> list[str]:
        return sorted(self.configs)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "platforms": self.platforms,
            "other_entries": self.other_entries,
        }


def read_index(registry: RegistryService, repository: str, tag: str) -> ServedIndex:
    """The index `tag` and `latest` name (the same one), straight from the registry."""
    where = f"{registry.host}/{repository}"
    with RegistryReader(registry.host, registry.username, registry.password) as reader:
        try:
            tagged = reader.get_manifest(repository, tag)
            latest = reader.get_manifest(repository, "latest")
            if latest.digest != tagged.digest:
                raise BenchFailure(f"{where}: latest is {latest.digest}, {tag} is {tagged.digest}")
            if not tagged.is_index:
                raise BenchFailure(f"{where}:{tag} is one image, not an index of platforms")
            configs = {}
            others = 0
            for entry in tagged.entries():
                if entry.is_attestation:
                    others += 1
                    continue
                child = reader.get_manifest(repository, entry.digest)
                configs[platform_name(entry.platform)] = child.config_digest or ""
        except ShipitError as error:
            raise BenchFailure(f"{where}:{tag} is not served ({error.message})") from error
    return ServedIndex(tagged.digest, configs, others)


class MultiBench:
    def __init__(self, bench: Bench, namespace: NetworkNamespace | None) -> None:
        self.bench = bench
        self.namespace = namespace
        run_id = bench.run_id
        self.image = f"shipit-bench/{run_id}-multi"
        self.ecr_repository = f"bench-{run_id}/multi"
        self.hub_repository = f"bench/{run_id}-multi"
        self.moto: MotoService | None = None  # buildx's, in the namespace
        self.inside: list[Registries] = []  # buildx's registries, in the namespace
        self.plugin = ""

    def repository(self, registry: str) -> str:
        return self.ecr_repository if registry == "ecr" else self.hub_repository

    # shipit, several platforms

    def ship(self, registries: Registries, tag: str, label: str) -> Sample:
        bench = self.bench
        log = bench.log_path(label, "shipit-multi")
        env = bench.shipit_env(registries)
        env.update(
            SHIPIT_IMAGE=self.image,
            SHIPIT_ECR_REPOSITORY=self.ecr_repository,
            SHIPIT_DOCKERHUB_REPOSITORY=self.hub_repository,
        )
        command = [*bench.shipit_cmd(), "ship", "--platform", ",".join(PLATFORMS), "--json"]
        result = timed(command, env, bench.project, log)
        return self._check_ship(result, registries, tag, label, log)

    def _check_ship(
        self, result: Timed, registries: Registries, tag: str, label: str, log: Path
    ) -> Sample:
        if result.code != 0:
            raise BenchFailure(
                f"{label}: shipit ship --platform exited {result.code} (log {log}):\n"
                f"{tail(result.stderr)}"
            )
        try:
            report = json.loads(result.stdout)
        except ValueError as exc:
            raise BenchFailure(f"{label}: shipit ship --json printed no JSON (log {log})") from exc
        push = report["push"]
        if not report.get("ok") or not push.get("ok"):
            raise BenchFailure(f"{label}: shipit reported a failure (log {log})")
        if push["tags"] != [tag, "latest"]:
            raise BenchFailure(f"{label}: shipit pushed tags {push['tags']}, expected {tag}")
        images = {
            platform_name(each["platform"]): each["image_id"]
            for each in report["build"]["platforms"]
        }
        if sorted(images) != sorted(PLATFORMS):
            raise BenchFailure(f"{label}: shipit built {sorted(images)}, not {list(PLATFORMS)}")
        by_registry = {entry["registry"]: entry for entry in push["registries"]}
        if set(by_registry) != {"ecr", "dockerhub"}:
            raise BenchFailure(f"{label}: shipit pushed to {sorted(by_registry)} only")
        served = {}
        for name, registry in registries.each().items():
            index = read_index(registry, self.repository(name), tag)
            if index.digest != by_registry[name]["digest"]:
                raise BenchFailure(
                    f"{label}: {name} serves {index.digest}, shipit reported "
                    f"{by_registry[name]['digest']}"
                )
            if index.configs != images:
                raise BenchFailure(
                    f"{label}: {name}'s index names {index.configs}, shipit built {images}"
                )
            served[name] = index
        if len({index.digest for index in served.values()}) != 1:
            raise BenchFailure(f"{label}: the registries serve different indexes: {served}")
        container = "shipit-" + self.image.replace("/", "-").replace(":", "-")
        if run_quiet("docker", "ps", "-aq", "--filter", f"name=^/{container}$"):
            raise BenchFailure(f"{label}: shipit left its container {container}")
        build_seconds = report["build"]["seconds"]
        run_seconds = sum(each["seconds"] for each in report["runs"])
        push_seconds = max(entry["seconds"] for entry in push["registries"])
        stages = {
            "build (both platforms)": build_seconds,
            "run + smoke (each platform not tested before)": round(run_seconds, 3),
            "push (both registries)": push_seconds,
            "start-up, engine, base index, stop, rest": round(
                result.seconds - build_seconds - run_seconds - push_seconds, 3
            ),
            "(first progress line at)": round(result.first_line, 3),
            "(exit after last progress line)": round(result.after_last_line, 3),
        }
        return Sample(
            "multi",
            result.seconds,
            {
                "built": all(each["built"] for each in report["build"]["platforms"]),
                "smoke_tests": len(report["runs"]),
                "smoke_reused": report["smoke_reused"] is not None,
                "status": {name: entry["status"] for name, entry in by_registry.items()},
                "ecr_token_from_cache": ecr_token_from_cache(by_registry["ecr"]),
                "index": served["ecr"].to_json(),
                "stages": stages,
                "log": str(log),
            },
        )

    # buildx

    def start_inside(self) -> None:
        """moto for buildx's ECR login, in the namespace, and the buildx plugin."""
        assert self.namespace is not None
        self.plugin = buildx_plugin(BenchFailure)
        self.moto = self.namespace.call(MotoService().start)

    def buildx(self, registries: Registries, tag: str, label: str) -> Sample:
        bench = self.bench
        assert self.namespace is not None and self.moto is not None
        log = bench.log_path(label, "buildx")
        trace = log.with_suffix(".trace")
        env = bench.plain_env(registries, tag, trace)
        env.update(self.moto.env())
        env.update(
            ECR_REPOSITORY=self.ecr_repository,
            HUB_REPOSITORY=self.hub_repository,
            PLATFORMS=",".join(PLATFORMS),
            BUILDX_PLUGIN=self.plugin,
            DOCKER_HOST=CONTAINERD_HOST,
        )
        result = self.namespace.call(timed, ["bash", str(BUILDX_SCRIPT)], env, bench.project, log)
        ended = time.time()
        if result.code != 0:
            raise BenchFailure(
                f"{label}: buildx_pipeline.sh exited {result.code} (log {log}):\n"
                f"{tail(result.stdout + result.stderr)}"
            )
        served = {
            name: self.namespace.call(read_index, registry, self.repository(name), tag)
            for name, registry in registries.each().items()
        }
        if len({index.digest for index in served.values()}) != 1:
            raise BenchFailure(f"{label}: buildx's registries serve different indexes: {served}")
        if served["ecr"].platforms != sorted(PLATFORMS):
            raise BenchFailure(
                f"{label}: buildx's index has {served['ecr'].platforms}, not {list(PLATFORMS)}"
            )
        return Sample(
            "buildx",
            result.seconds,
            {
                "index": served["ecr"].to_json(),
                "stages": plain_steps(trace, ended),
                "log": str(log),
            },
        )

    def remove_buildx_images(self, registries: Registries) -> None:
        """The images buildx's push left in the engine's store, one per tag."""
        ours = {
            f"{registries.ecr.host}/{self.ecr_repository}",
            f"{registries.hub.host}/{self.hub_repository}",
        }
        remove_named("containerd", lambda repository: repository in ours)

    def prune_buildx_cache(self) -> None:
        """The build cache records buildx's builds made (the site's layers, the context), so
        the next run has none; the records of the base's layers stay while the engine holds
        the base, and go at the end of the bench."""
        if self.namespace is None:
            return
        try:
            prune_added_build_cache(self.bench.build_cache_before)
        except BuildCacheUnreadable as error:
            raise BenchFailure(str(error)) from error

    def remove_shipit_images(self) -> None:
        remove_named("classic", lambda repository: repository == self.image)

    # Scenarios

    def cold(self, runs: int) -> list[Sample]:
        say(
            f"multi-platform cold ship: {runs} run(s) per side, {' + '.join(PLATFORMS)}, "
            "shipit (both smoke tests) against docker buildx build --push"
        )
        bench = self.bench
        assert self.namespace is not None
        self.start_inside()
        samples: list[Sample] = []
        for index in range(runs):
            bench.base_image = bench.fresh_base(f"multi{index}", every_platform=True)
            bench.write_site(secrets.token_hex(6))
            tag = bench.render_context()
            for side in COLD_SIDES if index % 2 == 0 else COLD_SIDES[::-1]:
                label = f"multicold{index}"
                if side == "shipit":
                    self.remove_shipit_images()
                    bench.moto.reset()  # shipit creates the ECR repository, as on a first ship
                    bench.fresh_cache()  # and has no ECR token yet
                    registries = bench.new_registries()
                    try:
                        sample = self.ship(registries, tag, label)
                    finally:
                        self.remove_shipit_images()
                        bench.close_registries(registries)
                    if not sample.detail["built"] or sample.detail["smoke_tests"] != len(PLATFORMS):
                        raise BenchFailure(
                            f"{label}: shipit did not build and smoke-test every platform"
                        )
                    if sample.detail["ecr_token_from_cache"]:
                        raise BenchFailure(f"{label}: shipit used a cached ECR token")
                    sample.side = "shipit"
                else:
                    registries = self.namespace.call(Registries.start)
                    self.inside.append(registries)
                    try:
                        sample = self.buildx(registries, tag, label)
                    finally:
                        self.remove_buildx_images(registries)
                        registries.close()
                        self.inside.remove(registries)
                samples.append(sample)
                say(f"  multi-platform cold run {index + 1}/{runs} {side}: {sample.seconds:.2f} s")
            platforms = [sample.detail["index"]["platforms"] for sample in samples[-2:]]
            if platforms[0] != platforms[1]:
                raise BenchFailure(f"multicold{index}: the sides' indexes differ: {platforms}")
            bench.drop_base()
            self.prune_buildx_cache()
        return samples

    def nochange(self, runs: int) -> list[Sample]:
        say(
            f"multi-platform no-change ship: {runs} run(s) each, {' + '.join(PLATFORMS)} "
            "against one platform, everything built and pushed"
        )
        bench = self.bench
        bench.fresh_cache()  # filled by the untimed ships, then kept
        bench.write_site(bench.nonce)
        tag = bench.render_context()
        registries = bench.new_registries()
        try:
            self.ship(registries, tag, "multiwarmup")
            bench.ship("shipit", registries, tag, "multiwarmup")
            before = self.served(registries, tag)
            samples: list[Sample] = []
            for index in range(runs):
                for side in NOCHANGE_SIDES if index % 2 == 0 else NOCHANGE_SIDES[::-1]:
                    label = f"multinochange{index}"
                    if side == "multi":
                        sample = self.ship(registries, tag, label)
                    else:
                        sample = bench.ship("shipit", registries, tag, label)
                        sample.side = "single"
                    if not sample.detail["ecr_token_from_cache"]:
                        raise BenchFailure(f"{label}: {side} did not reuse its cached ECR token")
                    if sample.detail["built"]:
                        raise BenchFailure(f"{label}: {side} rebuilt an unchanged site")
                    if not sample.detail["smoke_reused"]:
                        raise BenchFailure(f"{label}: {side} ran its smoke test again")
                    if set(sample.detail["status"].values()) != {"unchanged"}:
                        raise BenchFailure(f"{label}: {side} pushed: {sample.detail['status']}")
                    if self.served(registries, tag) != before:
                        raise BenchFailure(f"{label}: {side} changed what the registries serve")
                    samples.append(sample)
                    say(f"  multi no-change run {index + 1}/{runs} {side}: {sample.seconds:.2f} s")
        finally:
            self.remove_shipit_images()
            bench.remove_images(check_chain=False)
            bench.close_registries(registries)
        return samples

    def served(self, registries: Registries, tag: str) -> dict[str, Any]:
        """What both registries serve for both the multi- and the one-platform ship."""
        return {
            "multi": {
                name: read_index(registry, self.repository(name), tag)
                for name, registry in registries.each().items()
            },
            "single": self.bench.served_layers(registries),
        }

    def close(self) -> None:
        try:
            self.remove_shipit_images()
            for registries in list(self.inside):
                self.remove_buildx_images(registries)
            self.bench.drop_base()
            self.prune_buildx_cache()
        finally:
            for registries in self.inside:
                registries.close()
            if self.moto is not None:
                self.moto.stop()
