"""Push-throughput scenario of the bench: a new ~1 GB layer pushed to two loopback registries,
`shipit push --to ecr,dockerhub` against two parallel `docker push`es of the same image
(bench/README.md, "Push throughput").

One image is built once (untimed) from the example site plus one file of incompressible
bytes, so its top layer is about 1 GB. Each run of each side gets two fresh registries (empty
storage, new ports), so every push uploads the whole layer; the sides alternate which goes
first.
"""

from __future__ import annotations

import json
import os
import random
import resource
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import _table, median
from harness.registry_reader import RegistryReader
from harness.services import MotoService, RegistryService, moto_ecr_password

MB = 1_000_000
LAYER_BYTES = 1_000 * MB
SEED = 14
TARGET_RATIO = 1.05
HUB_USER = "bench-ci"
PUSH_HEADING = "## Push throughput: a new 1 GB layer to two registries"


@dataclass
class Pushed:
    seconds: float
    digests: dict[str, str]  # registry name -> manifest digest it serves
    detail: dict[str, Any]


class PushBench:
    def __init__(
        self,
        work: Path,
        run_id: str,
        shipit_cmd: list[str],
        base_env: dict[str, str],
        moto: MotoService,
        say: Callable[[str], None],
        failure: type[Exception],
    ) -> None:
        self.work = work / "push"
        self.logs = work / "logs"
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.shipit_cmd = shipit_cmd
        self.base_env = base_env
        self.moto = moto
        self.say = say
        self.failure = failure
        self.image = f"shipit-bench/{run_id}-push"
        self.ecr_repository = f"bench-{run_id}/push"
        self.hub_repository = f"bench/{run_id}-push"
        self.project = self.work / "project"
        self.registries: list[RegistryService] = []
        self.counter = 0
        self.image_id = ""
        self.tag = "bench-push"  # the plain side's tag

    # Inputs

    def prepare(self, base_image: str) -> None:
        """The project with one ~1 GB file of random bytes, built once by shipit."""
        repo = Path(__file__).resolve().parent.parent
        for folder in ("site", "templates"):
            shutil.copytree(repo / folder, self.project / folder)
        with (self.project / "site" / "site.toml").open("a") as toml:
            toml.write(f"\n# bench {self.run_id} push\n")
        started = time.monotonic()
        rng = random.Random(SEED)  # noqa: S311 - test data, not a secret
        big = self.project / "site" / "static" / "big"
        big.mkdir(parents=True)
        with (big / "layer.bin").open("wb") as stream:
            left = LAYER_BYTES
            while left:
                piece = min(left, 8 * 1024 * 1024)
                stream.write(rng.randbytes(piece))
                left -= piece
        env = self._shipit_env(base_image)
        done = self._run([*self.shipit_cmd, "build", "--json"], env, "build")
        report = json.loads(done.stdout)
        self.image_id = report["image_id"]
        size = int(self._quiet("docker", "image", "inspect", "-f", "{{.Size}}", self.image_id) or 0)
        if size < LAYER_BYTES:
            raise self.failure(f"push: image {self.image_id} is smaller than its 1 GB file")
        self.say(
            f"  push: built {self.image_id[7:19]} ({size / MB:,.0f} MB) in "
            f"{time.monotonic() - started:.0f} s"
        )

    def _shipit_env(self, base_image: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            SHIPIT_PROJECT=str(self.project),
            SHIPIT_IMAGE=self.image,
            SHIPIT_BASE_IMAGE=base_image,
            CI="true",
        )
        return env

    def _quiet(self, *args: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise self.failure(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _run(
        self, args: Sequence[str], env: dict[str, str], label: str
    ) -> subprocess.CompletedProcess[str]:
        self.counter += 1
        log = self.logs / f"push-{self.counter:03d}-{label}.log"
        started = time.perf_counter()
        done = subprocess.run(
            list(args),
            env=env,
            cwd=self.project,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        log.write_text(
            f"$ {' '.join(args)}\nexit {done.returncode} after "
            f"{time.perf_counter() - started:.3f} s\n--- stdout\n{done.stdout}\n"
            f"--- stderr\n{done.stderr}"
        )
        if done.returncode != 0:
            raise self.failure(f"push {label}: exited {done.returncode} (log {log})")
        return done

    # Registries

    def _registries(self) -> tuple[RegistryService, RegistryService, str]:
        token = "dckr_pat_" + secrets.token_urlsafe(24)
        ecr = RegistryService(username="AWS", password=moto_ecr_password()).start()
        self.registries.append(ecr)
        hub = RegistryService(username=HUB_USER, password=token).start()
        self.registries.append(hub)
        return ecr, hub, token

    def _close_registries(self) -> None:
        for registry in self.registries:
            registry.close()
        self.registries.clear()

    def _served(self, registry: RegistryService, repository: str, tag: str) -> str:
        """The manifest digest the registry serves for the tag; its config must be the image."""
        with RegistryReader(registry.host, registry.username, registry.password) as reader:
            manifest = reader.get_manifest(repository, tag)
        if manifest.content["config"]["digest"] != self.image_id:
            raise self.failure(
                f"push: {registry.host}/{repository}:{tag} serves config "
                f"{manifest.content['config']['digest']}, not the image {self.image_id}"
            )
        layers = manifest.content["layers"]
        if int(layers[-1]["size"]) < LAYER_BYTES:
            raise self.failure(f"push: the top layer in {registry.host} is under 1 GB")
        return manifest.digest

    # The two sides

    def shipit_side(self, index: int) -> Pushed:
        ecr, hub, token = self._registries()
        self.moto.reset()  # shipit creates the ECR repository, as on a first push
        env = self._shipit_env("shipit-local/nginx:bookworm")
        env.update(
            SHIPIT_ECR_REPOSITORY=self.ecr_repository,
            SHIPIT_ECR_REGISTRY=ecr.host,
            SHIPIT_DOCKERHUB_REGISTRY=hub.host,
            SHIPIT_DOCKERHUB_REPOSITORY=self.hub_repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=token,
            DOCKER_CONFIG=str(self.work / "docker-config-shipit"),
        )
        (self.work / "docker-config-shipit").mkdir(exist_ok=True)
        args = [*self.shipit_cmd, "push", "--to", "ecr,dockerhub", "--skip-smoke", "--json"]
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = self._run(args, env, f"{index}-shipit")
        seconds = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
        report = json.loads(done.stdout)
        by_name = {entry["registry"]: entry for entry in report["registries"]}
        if not report.get("ok") or {e["status"] for e in by_name.values()} != {"pushed"}:
            raise self.failure(f"push: shipit did not push to both: {by_name}")
        tag = report["tags"][0]
        digests = {
            "ecr": self._served(ecr, self.ecr_repository, tag),
            "dockerhub": self._served(hub, self.hub_repository, tag),
        }
        if len(set(digests.values())) != 1:
            raise self.failure(f"push: shipit left different digests: {digests}")
        if {by_name[name]["digest"] for name in digests} != set(digests.values()):
            raise self.failure(f"push: shipit reported {by_name}, registries serve {digests}")
        detail = {
            "client_cpu_seconds": round(cpu, 2),
            "seconds_per_registry": {name: by_name[name]["seconds"] for name in by_name},
            "bytes_uploaded": {name: by_name[name]["bytes_uploaded"] for name in by_name},
        }
        self._close_registries()
        return Pushed(seconds, digests, detail)

    def plain_side(self, index: int) -> Pushed:
        """`docker login --password-stdin` to both (untimed), then two `docker push`es started
        together and timed until both have exited."""
        ecr, hub, token = self._registries()
        config = Path(os.path.join(self.work, f"docker-config-{index}"))
        config.mkdir()
        env = dict(self.base_env, DOCKER_CONFIG=str(config))
        references = {
            "ecr": f"{ecr.host}/{self.ecr_repository}:{self.tag}",
            "dockerhub": f"{hub.host}/{self.hub_repository}:{self.tag}",
        }
        try:
            for registry, user, password in (
                (ecr, "AWS", moto_ecr_password()),
                (hub, HUB_USER, token),
            ):
                login = subprocess.run(
                    ["docker", "login", "-u", user, "--password-stdin", registry.host],
                    input=password,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if login.returncode != 0:
                    raise self.failure(f"push: docker login failed: {login.stderr.strip()}")
            for reference in references.values():
                self._quiet("docker", "tag", self.image_id, reference)
            self.counter += 1
            logs = {
                name: (self.logs / f"push-{self.counter:03d}-{index}-docker-{name}.log").open("w")
                for name in references
            }
            cpu_before = _children_cpu()
            started = time.perf_counter()
            procs = {
                name: subprocess.Popen(
                    ["docker", "push", reference],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=logs[name],
                    stderr=subprocess.STDOUT,
                )
                for name, reference in references.items()
            }
            codes = {name: proc.wait(timeout=1800) for name, proc in procs.items()}
            seconds = time.perf_counter() - started
            cpu = _children_cpu() - cpu_before
            for stream in logs.values():
                stream.close()
            if any(codes.values()):
                raise self.failure(f"push: docker push exited {codes}")
            digests = {
                "ecr": self._served(ecr, self.ecr_repository, self.tag),
                "dockerhub": self._served(hub, self.hub_repository, self.tag),
            }
        finally:
            for reference in references.values():
                subprocess.run(["docker", "rmi", reference], capture_output=True, check=False)
            shutil.rmtree(config, ignore_errors=True)
            self._close_registries()
        return Pushed(seconds, digests, {"client_cpu_seconds": round(cpu, 2)})

    def run(self, runs: int, base_image: str) -> dict[str, Any]:
        self.say(f"push throughput: a new 1 GB layer to two registries, {runs} run(s) per side")
        self.prepare(base_image)
        samples: dict[str, list[Pushed]] = {"shipit": [], "plain": []}
        loads: list[float] = []
        for index in range(runs):
            order = ("shipit", "plain") if index % 2 == 0 else ("plain", "shipit")
            for side in order:
                pushed = self.shipit_side(index) if side == "shipit" else self.plain_side(index)
                samples[side].append(pushed)
                loads.append(os.getloadavg()[0])
                self.say(
                    f"  push {index + 1}/{runs} {side}: {pushed.seconds:.2f} s "
                    f"(load {loads[-1]:.2f})"
                )
        return {
            "runs": runs,
            "image_bytes_top_layer": LAYER_BYTES,
            "sides": {
                side: {
                    "median": median([p.seconds for p in found]),
                    "samples": [round(p.seconds, 3) for p in found],
                    "details": [p.detail for p in found],
                }
                for side, found in samples.items()
            },
            "load_average_after_each": loads,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def close(self) -> None:
        self._close_registries()
        if self.image_id:
            subprocess.run(["docker", "rmi", "-f", self.image], capture_output=True, check=False)
            subprocess.run(
                ["docker", "rmi", "-f", f"{self.image}:latest"], capture_output=True, check=False
            )
            listed = subprocess.run(
                ["docker", "images", "-q", self.image], capture_output=True, text=True, check=False
            ).stdout.split()
            for image_id in {*listed, self.image_id}:
                subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def _children_cpu() -> float:
    """User + system CPU seconds of the waited-for children: the client's own work (the
    engine's compression and upload are the daemon's, not counted)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def push_markdown(push: dict[str, Any]) -> str:
    sides = push["sides"]
    ratio = sides["shipit"]["median"] / sides["plain"]["median"]
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    if verdict == "met" and ratio > TARGET_RATIO * 0.9:
        verdict = "met (close)"
    n = len(sides["shipit"]["samples"])
    row = (
        f"new 1 GB layer to two loopback registries (n={n})",
        f"{sides['shipit']['median']:.2f} s",
        f"{sides['plain']['median']:.2f} s",
        f"{ratio:.2f}",
        f"≤ {TARGET_RATIO:.2f}",
        verdict,
    )
    headers = (
        "scenario",
        "shipit push --to ecr,dockerhub",
        "two parallel docker push",
        "shipit / docker",
        "target",
        "result",
    )
    samples = [
        (
            side,
            ", ".join(f"{v:.2f}" for v in data["samples"]),
            ", ".join(f"{d.get('client_cpu_seconds', 0):.2f}" for d in data["details"]),
        )
        for side, data in sides.items()
    ]
    loads = ", ".join(f"{value:.2f}" for value in push["load_average_after_each"])
    return "\n".join(
        [
            PUSH_HEADING,
            "",
            f"Run {push['date']}, load average at start {push['load_average_start'][0]:.2f}, "
            f"after each push {loads}; {push['seconds']:.0f} s. "
            "`python -m bench.run --only push`; what is measured: bench/README.md. "
            "Checked: both registries serve the same manifest, whose config is the local image "
            "and whose top layer is the 1 GB one.",
            "",
            _table(headers, [row]),
            "",
            "Samples (seconds, in run order):",
            "",
            _table(("side", "wall seconds", "client CPU seconds (user + sys)"), samples),
            "",
        ]
    )
