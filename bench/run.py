#!/usr/bin/env python3
"""`make bench`: shipit against the plain docker-CLI script (bench/plain_pipeline.sh).

Both sides ship the same rendered example site, FROM the same base image index in a loopback
registry (bench/base.py), to the same kind of loopback registries (two Distribution registries
with htpasswd, one as ECR with moto's token password, one as Docker Hub, and moto_server for
the ECR API), timed as whole processes. Scenarios: cold ship, no-change ship, one-page change
(with bytes uploaded), start-up, a slow registry (+50 ms per request, with request counts),
big sites (bench/big.py), push throughput (bench/push.py) and multi-platform ships against
buildx (bench/multi.py). Writes bench/results.md and bench/results.json and prints the table.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.assets import ASSETS_HEADING, AssetsBench, assets_markdown, assets_verdicts
from bench.base import BaseImages
from bench.big import BIG_HEADING, SITES, BigBench, big_markdown, merge_into
from bench.common import (
    HUB_USER,
    PYTHON,
    BenchFailure,
    Registries,
    Sample,
    Timed,
    ecr_token_from_cache,
    get_manifest,
    plain_steps,
    run_quiet,
    say,
    stored_blobs,
    tail,
    timed,
)
from bench.crawl import CRAWL_HEADING, CrawlBench, crawl_markdown
from bench.engines import (
    BuildCacheUnreadable,
    build_cache_ids,
    containerd_namespace,
    prune_added_build_cache,
)
from bench.multi import COLD_SIDES, MULTI_SCENARIOS, NOCHANGE_SIDES, MultiBench
from bench.netns import NetworkNamespace
from bench.push import PUSH_HEADING, PushBench, push_markdown
from bench.report import SIDES, main_table, markdown, median, summarize
from bench.sign import SIGN_HEADING, scenario_sign, sign_markdown
from harness.platform_base import LAYOUT
from harness.services import AWS_ENV_CLEARED, MotoService, free_port
from shipit.config import LOCAL_BASE_IMAGE

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

VENV_BIN = Path(sys.executable).parent
SHIPIT = str(VENV_BIN / "shipit") if (VENV_BIN / "shipit").exists() else None
PLAIN_SCRIPT = BENCH / "plain_pipeline.sh"


# ---------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------


@dataclass
class Side:
    """Where a side ships to in the warm scenarios."""

    name: str
    registries: Registries


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = secrets.token_hex(4)
        self.work = Path(tempfile.mkdtemp(prefix=f"shipit-bench-{self.run_id}-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.project = self.work / "project"
        for folder in ("site", "templates"):
            shutil.copytree(REPO / folder, self.project / folder)
        self.site_toml = self.project / "site" / "site.toml"
        self.original_site = self.site_toml.read_text()
        self.context = self.work / "context"
        self.docker_config = self.work / "docker-config-shipit"  # stays empty
        self.docker_config.mkdir()
        self.images = {
            "shipit": f"shipit-bench/{self.run_id}-shipit",
            "plain": f"shipit-bench/{self.run_id}-plain",
        }
        self.ecr_repository = f"bench-{self.run_id}/site"
        self.hub_repository = f"bench/{self.run_id}-site"
        self.container = f"shipit-bench-{self.run_id}-plain"
        # The base both sides build from, in a registry of the bench's own (bench/base.py):
        # the reference of its index, or of a cold run's own copy of it (fresh_base).
        self.bases: BaseImages | None = None
        self.namespace: NetworkNamespace | None = None
        self.build_cache_before: set[str] = set()
        self.main_base = ""
        self.base_image = ""
        self.moto = MotoService()
        self.registries: list[Registries] = []
        self.counter = 0
        self.edit_number = 0
        self.nonce = secrets.token_hex(6)
        self.results: dict[str, Any] = {"scenarios": {}}
        # More settings for shipit's side (bench/sign.py's signing key).
        self.extra_env: dict[str, str] = {}
        # shipit's ECR token cache (XDG_CACHE_HOME): a developer's machine keeps one between
        # ships; a cold ship starts without one (fresh_cache).
        self.cache_home = self.work / "cache-0"
        self.caches = 0

    # Environment and inputs

    def _base_env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SHIPIT_", "DOCKERHUB_", "AWS_", "DOCKER_CONFIG"))
            and key not in AWS_ENV_CLEARED
            # The developer-loop scenarios are a developer's machine, not CI: shipit's ECR
            # token cache is on (it is off by default where CI is set).
            and key not in ("CI", "XDG_CACHE_HOME")
        }
        env.update(self.moto.env())
        env["XDG_CACHE_HOME"] = str(self.cache_home)
        return env

    def fresh_cache(self) -> None:
        """An empty cache folder for shipit from now on, as on a machine that never shipped."""
        self.caches += 1
        self.cache_home = self.work / f"cache-{self.caches}"

    def shipit_env(self, registries: Registries) -> dict[str, str]:
        env = self._base_env()
        env.update(
            SHIPIT_PROJECT=str(self.project),
            SHIPIT_IMAGE=self.images["shipit"],
            SHIPIT_BASE_IMAGE=self.base_image,
            SHIPIT_PORT=str(free_port()),
            SHIPIT_ECR_REPOSITORY=self.ecr_repository,
            SHIPIT_ECR_REGISTRY=registries.ecr_host,
            SHIPIT_DOCKERHUB_REGISTRY=registries.hub_host,
            SHIPIT_DOCKERHUB_REPOSITORY=self.hub_repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=registries.hub_token,
            DOCKER_CONFIG=str(self.docker_config),
        )
        env.update(self.extra_env)
        return env

    def plain_env(self, registries: Registries, tag: str, trace: Path) -> dict[str, str]:
        env = self._base_env()
        env.update(
            CONTEXT_DIR=str(self.context),
            IMAGE=self.images["plain"],
            TAG=tag,
            PORT=str(free_port()),
            ECR_REGISTRY=registries.ecr_host,
            ECR_REPOSITORY=self.ecr_repository,
            HUB_REGISTRY=registries.hub_host,
            HUB_REPOSITORY=self.hub_repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=registries.hub_token,
            PYTHON=PYTHON,
            CONTAINER=self.container,
            PLAIN_TRACE=str(trace),
        )
        return env

    def write_site(self, nonce: str, edit: int | None = None) -> None:
        """A site unique to this bench (so no build cache of anyone else applies); `edit`
        changes one value, the home page's message."""
        text = self.original_site
        if edit is not None:
            text, count = re.subn(
                r'^message = ".*"$',
                f'message = "One-page change number {edit} of the bench."',
                text,
                count=1,
                flags=re.MULTILINE,
            )
            if count != 1:
                raise BenchFailure('site.toml has no `message = "..."` line to edit')
        self.site_toml.write_text(text + f"\n# bench {self.run_id} nonce {nonce}\n")

    def render_context(self) -> str:
        """`shipit render --out` for the plain script (untimed); returns the sha tag both use."""
        shutil.rmtree(self.context, ignore_errors=True)
        env = self._base_env()
        env.update(SHIPIT_PROJECT=str(self.project), SHIPIT_BASE_IMAGE=self.base_image)
        done = subprocess.run(
            [*self.shipit_cmd(), "render", "--out", str(self.context), "--json"],
            env=env,
            cwd=self.project,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BenchFailure(f"shipit render failed ({done.returncode}): {tail(done.stderr)}")
        build_id = json.loads(done.stdout)["build_id"]
        # What shipit tags outside a git work tree (the bench project is a temporary copy).
        return f"build-{build_id[:12]}"

    @staticmethod
    def shipit_cmd() -> list[str]:
        return [SHIPIT] if SHIPIT else [PYTHON, "-m", "shipit"]

    # Running one side once

    def log_path(self, label: str, side: str) -> Path:
        self.counter += 1
        return self.logs / f"{self.counter:03d}-{label}-{side}.log"

    def ship(self, side: str, registries: Registries, tag: str, label: str) -> Sample:
        log = self.log_path(label, side)
        if side == "shipit":
            result = timed(
                [*self.shipit_cmd(), "ship", "--json"],
                self.shipit_env(registries),
                self.project,
                log,
            )
            return self._check_shipit(result, registries, tag, label, log)
        trace = log.with_suffix(".trace")
        result = timed(
            ["bash", str(PLAIN_SCRIPT)], self.plain_env(registries, tag, trace), self.project, log
        )
        ended = time.time()
        return self._check_plain(result, registries, tag, label, log, trace, ended)

    def _check_shipit(
        self, result: Timed, registries: Registries, tag: str, label: str, log: Path
    ) -> Sample:
        if result.code != 0:
            raise BenchFailure(
                f"{label}: shipit ship exited {result.code} (log {log}):\n{tail(result.stderr)}"
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
        image_id = push["image_id"]
        self._verify_served(registries, tag, image_id, label)
        by_registry = {entry["registry"]: entry for entry in push["registries"]}
        if set(by_registry) != {"ecr", "dockerhub"}:
            raise BenchFailure(f"{label}: shipit pushed to {sorted(by_registry)} only")
        push_seconds = max(entry["seconds"] for entry in push["registries"])
        build_seconds = report["build"]["seconds"]
        # No run when this very image passed its smoke test before (`smoke_reused`).
        run_seconds = report["run"]["seconds"] if report["run"] else 0.0
        stages = {
            "build": build_seconds,
            "run + smoke": run_seconds,
            "push (both registries)": push_seconds,
            "start-up, engine, stop, rest": round(
                result.seconds - build_seconds - run_seconds - push_seconds, 3
            ),
            "(first progress line at)": round(result.first_line, 3),
            "(exit after last progress line)": round(result.after_last_line, 3),
        }
        return Sample(
            "shipit",
            result.seconds,
            {
                "image_id": image_id,
                "built": report["build"]["built"],
                "smoke_reused": report["smoke_reused"] is not None,
                "stages": stages,
                "status": {name: entry["status"] for name, entry in by_registry.items()},
                "signatures": {
                    name: any(each["signed"] for each in entry.get("signatures", []))
                    for name, entry in by_registry.items()
                },
                "ecr_token_from_cache": ecr_token_from_cache(by_registry["ecr"]),
                "bytes_uploaded": {
                    name: entry["bytes_uploaded"] for name, entry in by_registry.items()
                },
                "log": str(log),
            },
        )

    def _check_plain(
        self,
        result: Timed,
        registries: Registries,
        tag: str,
        label: str,
        log: Path,
        trace: Path,
        ended: float,
    ) -> Sample:
        if result.code != 0:
            raise BenchFailure(
                f"{label}: plain_pipeline.sh exited {result.code} (log {log}):\n"
                f"{tail(result.stdout + result.stderr)}"
            )
        image_id = run_quiet(
            "docker", "image", "inspect", "-f", "{{.Id}}", f"{self.images['plain']}:{tag}"
        )
        self._verify_served(registries, tag, image_id, label)
        leftover = run_quiet("docker", "ps", "-aq", "--filter", f"name=^/{self.container}$")
        if leftover:
            raise BenchFailure(f"{label}: the plain script left its container {self.container}")
        return Sample(
            "plain",
            result.seconds,
            {"image_id": image_id, "stages": plain_steps(trace, ended), "log": str(log)},
        )

    def _verify_served(
        self, registries: Registries, tag: str, image_id: str, label: str
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Both tags in both registries serve one manifest whose config is the local image."""
        served = {}
        for name, registry in registries.each().items():
            repository = self.ecr_repository if name == "ecr" else self.hub_repository
            digest, manifest = get_manifest(registry, repository, tag)
            latest, _ = get_manifest(registry, repository, "latest")
            if latest != digest:
                raise BenchFailure(f"{label}: {name} latest is {latest}, {tag} is {digest}")
            if manifest["config"]["digest"] != image_id:
                raise BenchFailure(
                    f"{label}: {name} serves config {manifest['config']['digest']}, "
                    f"the local image is {image_id}"
                )
            served[name] = (digest, manifest)
        return served

    def served_layers(self, registries: Registries) -> dict[str, dict[str, int]]:
        layers = {}
        for name, registry in registries.each().items():
            repository = self.ecr_repository if name == "ecr" else self.hub_repository
            _, manifest = get_manifest(registry, repository, "latest")
            layers[name] = {layer["digest"]: int(layer["size"]) for layer in manifest["layers"]}
        return layers

    # Images

    def our_images(self) -> list[tuple[str, str]]:
        """(reference, id) of every image tag this bench made: local names and the
        registry-named tags of its own registries."""
        listed = run_quiet("docker", "images", "--format", "{{.Repository}}\t{{.Tag}}\t{{.ID}}")
        found = []
        for line in listed.splitlines():
            repository, tag, image_id = line.split("\t")
            host, _, path = repository.partition("/")
            # The repository names hold this run's id, so a loopback host is enough.
            ours = repository in self.images.values() or (
                host.startswith("127.0.0.1:") and path in (self.ecr_repository, self.hub_repository)
            )
            if ours and tag != "<none>":
                found.append((f"{repository}:{tag}", image_id))
        return found

    def remove_images(self, check_chain: bool = True) -> None:
        """Removes this bench's tags; Docker then prunes their untagged build parents, which
        is the legacy builder's cache for them. Fails when a parent survived."""
        images = self.our_images()
        if not images:
            return
        base_chain = set(run_quiet("docker", "history", "-q", self.base_image, check=False).split())
        chain: set[str] = set()
        for image_id in {image_id for _, image_id in images}:
            history = run_quiet("docker", "history", "-q", image_id, check=False).split()
            chain.update(entry for entry in history if entry != "<missing>")
        chain -= base_chain
        run_quiet("docker", "rmi", *[reference for reference, _ in images])
        if check_chain:
            left = [
                image_id
                for image_id in sorted(chain)
                if subprocess.run(
                    ["docker", "image", "inspect", image_id], capture_output=True, check=False
                ).returncode
                == 0
            ]
            if left:
                raise BenchFailure(
                    f"build cache of the bench images survived removal: {', '.join(left)}"
                )

    # Scenarios

    def new_registries(self) -> Registries:
        registries = Registries.start()
        self.registries.append(registries)
        return registries

    def close_registries(self, registries: Registries) -> None:
        registries.close()
        self.registries.remove(registries)

    @staticmethod
    def order(index: int) -> tuple[str, str]:
        return SIDES if index % 2 == 0 else SIDES[::-1]

    def start_base(self) -> None:
        """The base registry with the base index, pulled (untimed) into the engines the
        scenarios build on: every platform when a multi-platform scenario runs, and into
        the containerd-store engine for buildx's side."""
        multi = bool(self.args.multi or self.args.multi_nochange)
        if self.args.multi:
            self.namespace = containerd_namespace(BenchFailure)
            # The bench prunes only the build cache records that its pulls and builds add.
            try:
                self.build_cache_before = build_cache_ids()
            except BuildCacheUnreadable as error:
                raise BenchFailure(str(error)) from error
        self.bases = BaseImages(self.work, self.run_id, self.namespace, BenchFailure)
        main = self.bases.start()
        self.bases.pull(main, every_platform=multi, containerd=self.namespace is not None)
        self.main_base = self.base_image = main.reference
        say(f"base image {main.reference} ({', '.join(main.pushed.platforms)})")

    def fresh_base(self, name: int | str, *, every_platform: bool = False) -> str:
        """A base of its own for one cold run: the same index with one label more in each
        platform's config (same layers, new image ids), pulled untimed, so no build step of
        anything else on this machine (the Dockerfile's settings steps come before the
        site) can be a cache hit for a cold build."""
        assert self.bases is not None
        base = self.bases.variant(str(name))
        self.bases.pull(
            base, every_platform=every_platform, containerd=every_platform and bool(self.namespace)
        )
        return base.reference

    def drop_base(self) -> None:
        if self.bases is not None and self.base_image != self.main_base:
            self.bases.drop(self.base_image)
        self.base_image = self.main_base

    def scenario_cold(self, runs: int) -> None:
        say(f"cold ship: {runs} run(s) per side, fresh registries and no image each time")
        samples: list[Sample] = []
        for index in range(runs):
            self.base_image = self.fresh_base(index)
            self.write_site(secrets.token_hex(6))
            tag = self.render_context()
            for side in self.order(index):
                self.remove_images()
                if side == "shipit":
                    self.moto.reset()  # shipit creates the ECR repository, as on a first ship
                    self.fresh_cache()  # and has no ECR token yet
                registries = self.new_registries()
                try:
                    sample = self.ship(side, registries, tag, f"cold{index}")
                finally:
                    # Its build cache must not help the other side: remove it before that runs.
                    self.remove_images()
                    self.close_registries(registries)
                if side == "shipit" and sample.detail["built"] is not True:
                    raise BenchFailure("cold ship: shipit reused an image instead of building")
                if side == "shipit" and sample.detail["ecr_token_from_cache"]:
                    raise BenchFailure("cold ship: shipit used a cached ECR token")
                if "Using cache" in Path(sample.detail["log"]).read_text():
                    raise BenchFailure(f"cold ship: {side}'s build used the build cache")
                samples.append(sample)
                say(f"  cold run {index + 1}/{runs} {side}: {sample.seconds:.2f} s")
            self.drop_base()
        self.record("cold", samples)

    def prepare_warm(self) -> dict[str, Side]:
        """Each side gets its own registries holding what it pushed (untimed first ship)."""
        self.remove_images()
        self.moto.reset()
        self.fresh_cache()  # filled by the untimed ship, then kept, as on a developer's machine
        self.write_site(self.nonce)
        tag = self.render_context()
        sides = {}
        for side in SIDES:
            registries = self.new_registries()
            sides[side] = Side(side, registries)
            self.ship(side, registries, tag, "warmup")
        return sides

    def scenario_nochange(self, sides: dict[str, Side], runs: int, label: str = "nochange") -> None:
        say(f"{label}: {runs} run(s) per side, everything built and pushed")
        tag = self.render_context()
        before = {side: self.served_layers(sides[side].registries) for side in SIDES}
        samples: list[Sample] = []
        for index in range(runs):
            for side in self.order(index):
                registries = sides[side].registries
                registries.reset_counts()
                sample = self.ship(side, registries, tag, f"{label}{index}")
                if registries.ecr_proxy:
                    sample.detail["requests"] = registries.request_counts()
                if side == "shipit":
                    if not sample.detail["ecr_token_from_cache"]:
                        raise BenchFailure(f"{label}: shipit did not reuse its cached ECR token")
                    if sample.detail["built"]:
                        raise BenchFailure(f"{label}: shipit rebuilt an unchanged site")
                    if set(sample.detail["status"].values()) != {"unchanged"}:
                        raise BenchFailure(f"{label}: shipit pushed: {sample.detail['status']}")
                if self.served_layers(registries) != before[side]:
                    raise BenchFailure(f"{label}: {side} changed what the registries serve")
                samples.append(sample)
                say(f"  {label} run {index + 1}/{runs} {side}: {sample.seconds:.2f} s")
        self.record(label, samples)

    def scenario_onepage(self, sides: dict[str, Side], runs: int, label: str = "onepage") -> None:
        say(f"{label}: {runs} run(s) per side, one value in site.toml edited each time")
        samples: list[Sample] = []
        for index in range(runs):
            self.edit_number += 1
            self.write_site(self.nonce, edit=self.edit_number)
            tag = self.render_context()
            for side in self.order(index):
                registries = sides[side].registries
                previous = self.served_layers(registries)
                blobs_before = {n: stored_blobs(r) for n, r in registries.each().items()}
                registries.reset_counts()
                sample = self.ship(side, registries, tag, f"{label}{index}")
                if registries.ecr_proxy:
                    sample.detail["requests"] = registries.request_counts()
                current = self.served_layers(registries)
                upload: dict[str, Any] = {}
                for name, registry in registries.each().items():
                    changed = {
                        digest: size
                        for digest, size in current[name].items()
                        if digest not in previous[name]
                    }
                    if len(changed) != 1:
                        raise BenchFailure(
                            f"{label}: {side} {name}: expected one changed layer, got {changed}"
                        )
                    new_blobs = {
                        digest: size
                        for digest, size in stored_blobs(registry).items()
                        if digest not in blobs_before[name]
                    }
                    new_layers = sum(s for d, s in new_blobs.items() if d in current[name])
                    upload[name] = {
                        "changed_layer": sum(changed.values()),
                        "new_layer_blobs": new_layers,
                        "new_blobs_all": sum(new_blobs.values()),
                        "new_blob_count": len(new_blobs),
                    }
                    if side == "shipit":
                        upload[name]["reported"] = sample.detail["bytes_uploaded"][name]
                sample.detail["upload"] = upload
                if side == "shipit" and set(sample.detail["status"].values()) != {"pushed"}:
                    raise BenchFailure(f"{label}: shipit did not push: {sample.detail['status']}")
                if side == "shipit" and sample.detail["smoke_reused"]:
                    raise BenchFailure(f"{label}: shipit did not smoke-test the changed image")
                if side == "shipit" and not sample.detail["ecr_token_from_cache"]:
                    raise BenchFailure(f"{label}: shipit did not reuse its cached ECR token")
                samples.append(sample)
                say(f"  {label} run {index + 1}/{runs} {side}: {sample.seconds:.2f} s")
        self.record(label, samples)

    def scenario_startup(self, runs: int) -> None:
        say(f"start-up: {runs} run(s) each of shipit --version, shipit --help, python -c pass")
        commands = {
            "python -c pass": [PYTHON, "-c", "pass"],
            "shipit --version": [*self.shipit_cmd(), "--version"],
            "shipit --help": [*self.shipit_cmd(), "--help"],
        }
        env = self._base_env()
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for index in range(runs + 1):  # the first round warms the page cache, not counted
            for name in names[index % 3 :] + names[: index % 3]:
                started = time.perf_counter()
                done = subprocess.run(
                    commands[name], env=env, capture_output=True, text=True, check=False
                )
                seconds = time.perf_counter() - started
                if done.returncode != 0 or (
                    name != "python -c pass" and "shipit" not in done.stdout
                ):
                    raise BenchFailure(f"{name} exited {done.returncode}: {tail(done.stderr)}")
                if index > 0:
                    times[name].append(seconds)
        self.results["scenarios"]["startup"] = {
            name: {"median": median(values), "min": min(values), "samples": values}
            for name, values in times.items()
        }

    def scenario_slow(self, sides: dict[str, Side], runs: int, delay: float) -> None:
        for side in sides.values():
            side.registries.add_proxies(delay)
        try:
            self.scenario_nochange(sides, runs, label="slow_nochange")
            self.scenario_onepage(sides, runs, label="slow_onepage")
        finally:
            for side in sides.values():
                side.registries.remove_proxies()

    def record(self, label: str, samples: list[Sample], sides: tuple[str, str] = SIDES) -> None:
        by_side = {side: [s for s in samples if s.side == side] for side in sides}
        data: dict[str, Any] = {
            side: {
                "median": median([s.seconds for s in found]),
                "min": min(s.seconds for s in found),
                "samples": [s.seconds for s in found],
                "details": [s.detail for s in found],
            }
            for side, found in by_side.items()
        }
        data["sides"] = list(sides)
        data["load_average"] = os.getloadavg()
        self.results["scenarios"][label] = data

    def scenario_multi(self, cold_runs: int, nochange_runs: int) -> None:
        multi = MultiBench(self, self.namespace)
        try:
            if cold_runs:
                self.record("multi_cold", multi.cold(cold_runs), COLD_SIDES)
            if nochange_runs:
                self.record("multi_nochange", multi.nochange(nochange_runs), NOCHANGE_SIDES)
        finally:
            multi.close()

    def scenario_big(self, runs: int, sites: Sequence[str]) -> None:
        started = time.monotonic()
        big = BigBench(
            self.work,
            self.run_id,
            self.base_image,
            self.fresh_base,
            self.shipit_cmd(),
            PYTHON,
            self._base_env(),
            say,
            BenchFailure,
        )
        load_start = os.getloadavg()
        try:
            results = big.run(runs, sites)
        finally:
            big.close()
        results.update(
            date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            load_average_start=load_start,
            load_average_end=os.getloadavg(),
            seconds=round(time.monotonic() - started, 1),
        )
        self.results["big_sites"] = results

    def scenario_assets(self, rounds: int) -> None:
        load_start = os.getloadavg()
        bench = AssetsBench(
            self.work, self.run_id, self.shipit_cmd(), self._base_env(), say, BenchFailure
        )
        try:
            results = bench.run(rounds, self.args.assets_seconds)
        finally:
            bench.close()
        results.update(load_average_start=load_start, load_average_end=os.getloadavg())
        self.results["assets"] = results

    def scenario_crawl(self, runs: int) -> None:
        started, load_start = time.monotonic(), os.getloadavg()
        bench = CrawlBench(
            self.work,
            REPO,
            self.run_id,
            self.shipit_cmd(),
            PYTHON,
            self._base_env(),
            LOCAL_BASE_IMAGE,
            say,
            BenchFailure,
        )
        try:
            results = bench.run(runs)
        finally:
            bench.close()
        results.update(
            date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            load_average_start=load_start,
            load_average_end=os.getloadavg(),
            seconds=round(time.monotonic() - started, 1),
        )
        self.results["crawl"] = results

    def scenario_push(self, runs: int) -> None:
        started = time.monotonic()
        load_start = os.getloadavg()
        bench = PushBench(
            self.work,
            self.run_id,
            self.shipit_cmd(),
            self._base_env(),
            self.moto,
            say,
            BenchFailure,
        )
        try:
            results = bench.run(runs, self.base_image)
        finally:
            bench.close()
        results.update(
            load_average_start=load_start,
            load_average_end=os.getloadavg(),
            seconds=round(time.monotonic() - started, 1),
        )
        self.results["push_throughput"] = results

    @staticmethod
    def compile_shipit() -> None:
        """shipit's modules as bytecode, untimed, as `pip install` leaves them. An editable
        install has none, and where PYTHONDONTWRITEBYTECODE is set (as on this machine's
        shells) every run would compile all of shipit again, about 0.07 s that no installed
        shipit pays."""
        done = subprocess.run(
            [
                PYTHON,
                "-c",
                "import compileall, os, shipit; "
                "raise SystemExit(not compileall.compile_dir("
                "os.path.dirname(shipit.__file__), quiet=1))",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            output = tail(done.stdout + done.stderr)
            raise BenchFailure(f"cannot compile shipit's modules: {output}")

    # Whole run

    def run(self) -> dict[str, Any]:
        args = self.args
        started = time.monotonic()
        self.results.update(
            machine_info(), started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )
        self.results["counts"] = {
            "big": args.big,
            "cold": args.cold,
            "nochange": args.nochange,
            "onepage": args.onepage,
            "startup": args.startup,
            "slow": args.slow,
            "slow_delay_ms": args.delay_ms,
            "push": args.push,
            "multi": args.multi,
            "multi_nochange": args.multi_nochange,
            "assets": args.assets,
            "crawl": args.crawl,
            "sign": args.sign,
            "sign_nochange": args.sign_nochange,
        }
        self.results["load_average_start"] = os.getloadavg()
        self.compile_shipit()
        if args.startup:
            self.scenario_startup(args.startup)
        if args.assets:
            self.scenario_assets(args.assets)
        if args.crawl:
            self.scenario_crawl(args.crawl)
        ships = (args.cold, args.nochange, args.onepage, args.slow, args.push, args.sign)
        ships += (args.sign_nochange,)
        if not any((*ships, args.big, args.multi, args.multi_nochange)):
            return self.finish(started)
        self.start_base()
        if args.big:
            self.scenario_big(args.big, args.big_sites)
        if not any((*ships, args.multi, args.multi_nochange)):
            return self.finish(started)
        self.moto.start()
        if args.push:
            self.scenario_push(args.push)
        if args.cold:
            self.scenario_cold(args.cold)
        if args.nochange or args.onepage or args.slow:
            sides = self.prepare_warm()
            if args.nochange:
                self.scenario_nochange(sides, args.nochange)
            if args.onepage:
                self.scenario_onepage(sides, args.onepage)
            if args.slow:
                self.scenario_slow(sides, args.slow, args.delay_ms / 1000)
        if args.multi or args.multi_nochange:
            self.scenario_multi(args.multi, args.multi_nochange)
        if args.sign or args.sign_nochange:
            say(f"signing: {args.sign} cold and {args.sign_nochange} no-change ships per side")
            self.results["signing"] = scenario_sign(
                self, args.sign, args.sign_nochange, say, BenchFailure
            )
        return self.finish(started)

    def finish(self, started: float) -> dict[str, Any]:
        self.results["load_average_end"] = os.getloadavg()
        self.results["bench_seconds"] = round(time.monotonic() - started, 1)
        return self.results

    def close(self, keep_work: bool) -> None:
        try:
            self.remove_images(check_chain=False)
            self.drop_base()
        finally:
            for registries in list(self.registries):
                self.close_registries(registries)
            subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)
            self.moto.stop()
            if self.bases is not None:
                self.bases.close()
            if self.namespace is not None:
                self.namespace.close()
                # Last: the records of the base's layers are shared with its images until now.
                with contextlib.suppress(BuildCacheUnreadable):
                    prune_added_build_cache(self.build_cache_before)
            if not keep_work:
                shutil.rmtree(self.work, ignore_errors=True)


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "engine": run_quiet("docker", "version", "--format", "{{.Server.Version}}", check=False),
        "storage_driver": run_quiet("docker", "info", "--format", "{{.Driver}}", check=False),
        "python": platform.python_version(),
        "shipit": run_quiet(*Bench.shipit_cmd(), "--version", check=False),
    }


COUNTS = {
    "cold": 5,
    "nochange": 9,
    "onepage": 7,
    "startup": 30,
    "slow": 3,
    "big": 3,
    "push": 3,
    "multi": 5,
    "multi_nochange": 9,
    "assets": 5,
    "crawl": 5,
    "sign": 5,
    "sign_nochange": 9,
}
# --only NAME runs these counts (the others are 0 unless given).
ONLY = {
    "big": ("big",),
    "push": ("push",),
    "multi": ("multi", "multi_nochange"),
    "assets": ("assets",),
    "crawl": ("crawl",),
    "sign": ("sign", "sign_nochange"),
}

QUICK_COUNTS = {
    "cold": 1,
    "nochange": 1,
    "onepage": 1,
    "startup": 2,
    "slow": 1,
    "big": 1,
    "push": 1,
    "multi": 1,
    "multi_nochange": 1,
    "assets": 1,
    "crawl": 1,
    "sign": 1,
    "sign_nochange": 1,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--cold", type=int, help="cold ships per side (default 5)")
    add("--nochange", type=int, help="no-change ships per side (default 9)")
    add("--onepage", type=int, help="one-page changes per side (default 7)")
    add("--startup", type=int, help="start-up runs per command (default 30)")
    add("--slow", type=int, help="slow-registry ships per side and kind (default 3)")
    add("--delay-ms", type=int, default=50, help="slow proxy's delay per request (default 50)")
    add("--big", type=int, help="cold builds per side and big site (default 3)")
    add("--push", type=int, help="pushes of a new 1 GB layer per side (default 3)")
    add("--multi", type=int, help="cold multi-platform ships per side, against buildx (default 5)")
    add(
        "--multi-nochange",
        type=int,
        help="no-change multi-platform ships, against one-platform ones (default 9)",
    )
    add("--assets", type=int, help="wrk runs per side of the assets scenario (default 5)")
    add("--assets-seconds", type=int, default=5, help="length of each wrk run (default 5)")
    add("--crawl", type=int, help="crawls per side of a 1,000-page site (default 5)")
    add("--sign", type=int, help="cold ships per side, signed and unsigned (default 5)")
    add("--sign-nochange", type=int, help="no-change ships per side, signed and not (default 9)")
    add(
        "--big-sites",
        default="",
        help=f"comma-separated big sites to run (default all: {','.join(s.key for s in SITES)})",
    )
    add(
        "--only",
        choices=tuple(ONLY),
        help="run only these scenarios (multi: both multi-platform ones); the other results "
        "in results.md/json are kept",
    )
    add("--quick", action="store_true", help="1 run each (2 for start-up): check the bench works")
    add("--out", type=Path, default=BENCH, help="folder for results.md and results.json")
    add("--keep-work", action="store_true", help="keep the temporary folder with the logs")
    args = parser.parse_args(argv)
    for name, default in (QUICK_COUNTS if args.quick else COUNTS).items():
        if getattr(args, name) is None:
            setattr(args, name, 0 if args.only and name not in ONLY[args.only] else default)
    args.big_sites = [key for key in args.big_sites.split(",") if key]
    unknown = set(args.big_sites) - {site.key for site in SITES}
    if unknown:
        parser.error(f"unknown big sites: {', '.join(sorted(unknown))}")
    return args


def write_big_only(results: dict[str, Any], out: Path) -> None:
    """Only the big-site section is new: the other results in results.md and results.json
    stay as the last full run left them."""
    big = results["big_sites"]
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    stored = json.loads(json_path.read_text()) if json_path.exists() else {}
    # A run of some sites (--big-sites) keeps the others' last results.
    kept = stored.get("big_sites", {}).get("sites", {})
    big["sites"] = {**kept, **big["sites"]}
    big["sites"] = {site.key: big["sites"][site.key] for site in SITES if site.key in big["sites"]}
    stored["big_sites"] = big
    json_path.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    section = big_markdown(big)
    (out / "results.md").write_text(merge_into(out / "results.md", section))
    print(section.split("\n\n")[2])  # the table
    print(f"\n(written to {out / 'results.md'} ({BIG_HEADING[3:]}) and {json_path})")


def write_section_only(
    results: dict[str, Any],
    out: Path,
    key: str,
    markdown: Callable[[dict[str, Any]], str],
    heading: str,
) -> None:
    """Only the section of `key` is new: results.json gets it, results.md gets its section
    under `heading` in place of the last one, and the rest stays as the last run left it."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    stored = json.loads(json_path.read_text()) if json_path.exists() else {}
    stored[key] = results[key]
    json_path.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    section = markdown(results[key])
    (out / "results.md").write_text(merge_into(out / "results.md", section, heading))
    print(section)
    print(f"\n(written to {out / 'results.md'} ({heading[3:]}) and {json_path})")


def write_multi_only(results: dict[str, Any], out: Path) -> None:
    """The multi-platform rows are new; every other result stays as the last run left it,
    and results.md is written again from the whole."""
    json_path = out / "results.json"
    stored = json.loads(json_path.read_text()) if json_path.exists() else {}
    if not stored.get("scenarios"):
        write_all(results, out)
        return
    for key in MULTI_SCENARIOS:
        if key in results["scenarios"]:
            stored["scenarios"][key] = results["scenarios"][key]
    stored.setdefault("counts", {}).update(
        {name: results["counts"][name] for name in ONLY["multi"]}
    )
    stored["multi_run"] = {
        "date": results["date"],
        "load_average_start": results["load_average_start"],
        "load_average_end": results["load_average_end"],
        "seconds": results["bench_seconds"],
    }
    write_all(stored, out)


def write_all(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """results.json and results.md from `results`; prints the main table."""
    summary = summarize(results)
    results["summary"] = summary
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results, summary) + "\n"
    if "big_sites" in results:
        text += "\n" + big_markdown(results["big_sites"])
    if "push_throughput" in results:
        text += "\n" + push_markdown(results["push_throughput"])
    if "assets" in results:
        text += "\n" + assets_markdown(results["assets"])
    if "crawl" in results:
        text += "\n" + crawl_markdown(results["crawl"])
    if "signing" in results:
        text += "\n" + sign_markdown(results["signing"])
    (out / "results.md").write_text(text)
    print(main_table(summary))
    print(f"\n(written to {out / 'results.md'} and {out / 'results.json'})")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (LAYOUT / "index.json").is_file():
        say(f"no multi-platform base layout in {LAYOUT}: run scripts/testenv.sh (make env) first")
        return 2
    bench = Bench(args)
    say(f"run {bench.run_id}, work folder {bench.work}")
    failed = True
    try:
        results = bench.run()
        failed = False
    except BenchFailure as failure:
        say(f"FAILED: {failure}")
        say(f"logs kept in {bench.logs}")
        return 1
    finally:
        bench.close(keep_work=failed or args.keep_work)
    if args.only == "big":
        write_big_only(results, args.out)
        return 0
    if args.only == "push":
        write_section_only(results, args.out, "push_throughput", push_markdown, PUSH_HEADING)
        return 0
    if args.only == "assets":
        assets = results["assets"]
        assets["verdicts"] = assets_verdicts(assets)
        write_section_only(results, args.out, "assets", assets_markdown, ASSETS_HEADING)
        missed = [name for name, verdict in assets["verdicts"].items() if verdict == "MISSED"]
        if missed:
            say("assets targets missed: " + ", ".join(missed))
        return 0
    if args.only == "crawl":
        write_section_only(results, args.out, "crawl", crawl_markdown, CRAWL_HEADING)
        return 0
    if args.only == "sign":
        write_section_only(results, args.out, "signing", sign_markdown, SIGN_HEADING)
        return 0
    if not args.keep_work:  # the logs are gone with the work folder
        for data in results["scenarios"].values():
            for side in data.get("sides", SIDES) if isinstance(data, dict) else ():
                for detail in data.get(side, {}).get("details", []):
                    detail.pop("log", None)
    if args.only == "multi":
        write_multi_only(results, args.out)
        return 0
    summary = write_all(results, args.out)
    missed = [row["scenario"] for row in summary["rows"] if row["verdict"] == "MISSED"]
    if missed:
        say("targets missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
