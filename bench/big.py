"""Big-site scenarios of the bench: `shipit build` against `docker build` of the same
rendered context, with each side's peak memory (bench/README.md, "Big sites").

Sites are generated in the bench's temporary folder: one 300 MB file, 20,000 small files,
and 1 GB of mixed sizes. Per site: cold builds (each side from a fresh copy of the base
image, so no build step of anything else can be a cache hit, and shipit without its input
index), then no-change builds against `python -c pass` and a `docker build` cache hit.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import _table, median

MB = 1_000_000
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)
# A fixed seed: the same sites on every run (random bytes, so nothing compresses or dedupes).
SEED = 14


@dataclass(frozen=True)
class BigSite:
    key: str
    title: str
    # (count, size of each) of static files
    files: tuple[tuple[int, int], ...]

    @property
    def total(self) -> int:
        return sum(count * size for count, size in self.files)

    @property
    def count(self) -> int:
        return sum(count for count, _ in self.files)


SITES = (
    BigSite("one_300mb", "one 300 MB file", ((1, 300 * MB),)),
    BigSite("files_20k", "20,000 files", ((20_000, 2_000),)),
    BigSite(
        "mixed_1gb",
        "1 GB mixed",
        ((2, 200 * MB), (40, 5 * MB), (2_000, 100_000), (8_000, 25_000)),
    ),
)
# Ratios shipit / docker build (cold) and seconds above `python -c pass` (no-change).
TARGET_COLD = 1.05
TARGET_COLD_MANY_FILES = 1.0
TARGET_NOCHANGE_SECONDS = 0.5
TARGET_PEAK_MB = 150


@dataclass
class Measured:
    seconds: float
    code: int
    peak_rss_mb: float
    stdout: str
    stderr: str


def measure(args: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Measured:
    """A whole process: wall time and its own peak RSS. The RSS comes from GNU time, which
    forks the command from its own small process: Linux counts the memory a child had at
    its exec (its parent's, after a fork) in the child's ru_maxrss, so measuring from this
    (big) Python process would report at least this process's size."""
    rss_path = log.with_suffix(".rss")
    started = time.perf_counter()
    done = subprocess.run(
        [TIME, "-f", "%M", "-o", str(rss_path), *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    rss_lines = rss_path.read_text().split() if rss_path.exists() else []
    peak_mb = int(rss_lines[-1]) / 1024 if rss_lines and rss_lines[-1].isdigit() else float("nan")
    rss_path.unlink(missing_ok=True)
    log.write_text(
        f"$ {' '.join(args)}\nexit {done.returncode} after {seconds:.3f} s, "
        f"peak RSS {peak_mb:.1f} MB\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    return Measured(seconds, done.returncode, peak_mb, done.stdout, done.stderr)


def generate(site: BigSite, static: Path) -> None:
    """Reproducible random bytes (nothing compresses), in folders of at most 500 files."""
    rng = random.Random(SEED)  # noqa: S311 - test data, not a secret
    number = 0
    for count, size in site.files:
        for _ in range(count):
            folder = static / "big" / f"d{number // 500:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"f{number:05d}.bin").open("wb") as stream:
                left = size
                while left:
                    piece = min(left, 8 * 1024 * 1024)
                    stream.write(rng.randbytes(piece))
                    left -= piece
            number += 1


class BigBench:
    def __init__(
        self,
        work: Path,
        run_id: str,
        base_image: str,
        fresh_base: Callable[[str], str],
        shipit_cmd: list[str],
        python: str,
        base_env: dict[str, str],
        say: Callable[[str], None],
        failure: type[Exception],
    ) -> None:
        self.work = work / "big"
        self.logs = work / "logs"
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.base_image = base_image
        self.fresh_base = fresh_base
        self.shipit_cmd = shipit_cmd
        self.python = python
        self.base_env = base_env
        self.say = say
        self.failure = failure
        self.counter = 0
        self.images: set[str] = set()
        self.bases: set[str] = set()  # fresh base images not removed yet

    def _log(self, label: str) -> Path:
        self.counter += 1
        return self.logs / f"big-{self.counter:03d}-{label}.log"

    def _shipit_env(self, project: Path, image: str, base: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            SHIPIT_PROJECT=str(project), SHIPIT_IMAGE=image, SHIPIT_BASE_IMAGE=base, CI="true"
        )
        # The docker CLI's legacy builder, as docker-py's: the same engine code on both sides.
        env["DOCKER_BUILDKIT"] = "0"
        return env

    def _run(self, args: Sequence[str], env: dict[str, str], cwd: Path, label: str) -> Measured:
        result = measure(args, env, cwd, self._log(label))
        if result.code != 0:
            raise self.failure(
                f"{label}: {' '.join(args[:3])} exited {result.code}: {result.stderr[-2000:]}"
            )
        return result

    def prepare(self, site: BigSite) -> Path:
        project = self.work / site.key
        shutil.rmtree(project, ignore_errors=True)
        repo = Path(__file__).resolve().parent.parent
        for folder in ("site", "templates"):
            shutil.copytree(repo / folder, project / folder)
        with (project / "site" / "site.toml").open("a") as toml:
            toml.write(f"\n# bench {self.run_id} {site.key}\n")
        started = time.monotonic()
        generate(site, project / "site" / "static")
        self.say(
            f"  generated {site.title}: {site.count:,} files, {site.total / MB:,.0f} MB "
            f"in {time.monotonic() - started:.0f} s"
        )
        return project

    def render(self, project: Path, base: str) -> Path:
        context = self.work / "context"
        shutil.rmtree(context, ignore_errors=True)
        env = self._shipit_env(project, f"shipit-bench/{self.run_id}-big", base)
        self._run(
            [*self.shipit_cmd, "render", "--out", str(context), "--quiet"], env, project, "render"
        )
        return context

    def cold(self, site: BigSite, project: Path, runs: int) -> dict[str, list[Measured]]:
        context = self.render(project, self.base_image)
        dockerfile = context / "Dockerfile"
        template = dockerfile.read_text()
        samples: dict[str, list[Measured]] = {"shipit": [], "plain": []}
        for index in range(runs):
            order = ("shipit", "plain") if index % 2 == 0 else ("plain", "shipit")
            for side in order:
                base = self.fresh_base(f"{site.key}-{index}-{side}")
                self.bases.add(base)
                image = f"shipit-bench/{self.run_id}-big-{side}"
                self.images.add(image)
                if side == "shipit":
                    shutil.rmtree(project / ".shipit", ignore_errors=True)  # no input index
                    env = self._shipit_env(project, image, base)
                    result = self._run(
                        [*self.shipit_cmd, "build", "--json"], env, project, f"cold-{site.key}"
                    )
                    report = json.loads(result.stdout)
                    if not report["built"]:
                        raise self.failure(f"cold {site.key}: shipit reused an image")
                    image_id = report["image_id"]
                else:
                    dockerfile.write_text(
                        re.sub(r"^FROM .*$", f"FROM {base}", template, count=1, flags=re.M)
                    )
                    env = self._shipit_env(project, image, base)
                    result = self._run(
                        ["docker", "build", "-q", "-t", f"{image}:latest", str(context)],
                        env,
                        project,
                        f"cold-{site.key}-docker",
                    )
                    image_id = result.stdout.strip().splitlines()[-1]
                self._check_image(image_id, site, f"cold {site.key} {side}")
                samples[side].append(result)
                self.say(
                    f"  cold {site.key} {index + 1}/{runs} {side}: {result.seconds:.2f} s, "
                    f"peak {result.peak_rss_mb:.0f} MB"
                )
                self.remove_images()
                subprocess.run(["docker", "rmi", base], capture_output=True, check=False)
                self.bases.discard(base)
        dockerfile.write_text(template)
        return samples

    def _check_image(self, image_id: str, site: BigSite, label: str) -> None:
        inspected = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", image_id],
            capture_output=True,
            text=True,
            check=False,
        )
        if inspected.returncode != 0 or int(inspected.stdout.strip() or 0) < site.total:
            raise self.failure(f"{label}: image {image_id} is missing or smaller than the site")

    def nochange(self, site: BigSite, project: Path, runs: int) -> dict[str, list[Measured]]:
        """One untimed build fills the engine and the index; then shipit's no-change build,
        `python -c pass` and a `docker build` cache hit, interleaved."""
        image = f"shipit-bench/{self.run_id}-big-shipit"
        plain = f"shipit-bench/{self.run_id}-big-plain"
        self.images.update((image, plain))
        env = self._shipit_env(project, image, self.base_image)
        self._run([*self.shipit_cmd, "build", "--quiet"], env, project, f"warm-{site.key}")
        context = self.render(project, self.base_image)
        docker_build = ["docker", "build", "-q", "-t", f"{plain}:latest", str(context)]
        self._run(docker_build, env, project, f"warm-{site.key}-docker")
        # A no-change build happens some time after the last change; files written less
        # than 2 s before the index was are hashed once more (racy git), not counted here.
        time.sleep(2.1)
        self._run([*self.shipit_cmd, "build", "--quiet"], env, project, f"settle-{site.key}")
        samples: dict[str, list[Measured]] = {"shipit": [], "python": [], "plain": []}
        commands = {
            "shipit": [*self.shipit_cmd, "build", "--json"],
            "python": [self.python, "-c", "pass"],
            "plain": docker_build,
        }
        for index in range(runs):
            for side in (*list(commands)[index % 3 :], *list(commands)[: index % 3]):
                result = self._run(commands[side], env, project, f"nochange-{site.key}-{side}")
                if side == "shipit" and json.loads(result.stdout)["built"]:
                    raise self.failure(f"no-change {site.key}: shipit rebuilt an unchanged site")
                samples[side].append(result)
        self.say(
            f"  no-change {site.key}: shipit {median([m.seconds for m in samples['shipit']]):.2f}"
            f" s, python -c pass {median([m.seconds for m in samples['python']]):.2f} s, "
            f"docker build (cache hit) {median([m.seconds for m in samples['plain']]):.2f} s"
        )
        self.remove_images()
        return samples

    def remove_images(self) -> None:
        for image in self.images:
            listed = subprocess.run(
                ["docker", "images", "-q", image], capture_output=True, text=True, check=False
            ).stdout.split()
            for image_id in set(listed):
                subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)

    def run(self, runs: int, only: Sequence[str] = ()) -> dict[str, Any]:
        results: dict[str, Any] = {"runs": runs, "sites": {}}
        for site in SITES:
            if only and site.key not in only:
                continue
            self.say(f"big site: {site.title}")
            project = self.prepare(site)
            try:
                cold = self.cold(site, project, runs)
                nochange = self.nochange(site, project, max(3, runs))
            finally:
                shutil.rmtree(project, ignore_errors=True)
                shutil.rmtree(self.work / "context", ignore_errors=True)
            results["sites"][site.key] = {
                "title": site.title,
                "files": site.count,
                "bytes": site.total,
                "cold": _samples(cold),
                "nochange": _samples(nochange),
                "load_average": os.getloadavg(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        return results

    def close(self) -> None:
        self.remove_images()
        for base in self.bases:
            subprocess.run(["docker", "rmi", base], capture_output=True, check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def _samples(by_side: dict[str, list[Measured]]) -> dict[str, Any]:
    return {
        side: {
            "median": median([m.seconds for m in found]),
            "samples": [round(m.seconds, 3) for m in found],
            "peak_rss_mb": max(m.peak_rss_mb for m in found),
        }
        for side, found in by_side.items()
    }


def _verdict(value: float, target: float) -> str:
    if value <= target:
        return "met" if value <= target * 0.9 else "met (close)"
    return "MISSED"


def big_rows(big: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key, data in big["sites"].items():
        cold, nochange = data["cold"], data["nochange"]
        target = TARGET_COLD_MANY_FILES if key == "files_20k" else TARGET_COLD
        ratio = cold["shipit"]["median"] / cold["plain"]["median"]
        n = len(cold["shipit"]["samples"])
        rows.append(
            (
                f"{data['title']}: cold build (n={n})",
                f"{cold['shipit']['median']:.2f} s",
                f"{cold['plain']['median']:.2f} s",
                f"{ratio:.2f}",
                f"≤ {target:.2f}",
                _verdict(ratio, target),
                f"{cold['shipit']['peak_rss_mb']:.0f} MB",
                f"{cold['plain']['peak_rss_mb']:.0f} MB",
                _verdict(cold["shipit"]["peak_rss_mb"], TARGET_PEAK_MB),
            )
        )
        above = nochange["shipit"]["median"] - nochange["python"]["median"]
        n = len(nochange["shipit"]["samples"])
        rows.append(
            (
                f"{data['title']}: no-change build (n={n}), above `python -c pass` "
                f"({nochange['python']['median']:.2f} s)",
                f"{nochange['shipit']['median']:.2f} s (+{above:.2f} s)",
                f"{nochange['plain']['median']:.2f} s (cache hit)",
                f"{nochange['shipit']['median'] / nochange['plain']['median']:.2f}",
                f"≤ +{TARGET_NOCHANGE_SECONDS:.2f} s",
                _verdict(above, TARGET_NOCHANGE_SECONDS),
                f"{nochange['shipit']['peak_rss_mb']:.0f} MB",
                f"{nochange['plain']['peak_rss_mb']:.0f} MB",
                "",
            )
        )
    return rows


BIG_HEADING = "## Big sites: `shipit build` against `docker build`"


def big_markdown(big: dict[str, Any]) -> str:
    headers = (
        "scenario",
        "shipit build",
        "docker build",
        "shipit / docker",
        "target",
        "result",
        "shipit peak RSS",
        "docker CLI peak RSS",
        f"RSS ≤ {TARGET_PEAK_MB} MB",
    )
    dates = [
        f"{data['title']}: {data.get('date', big['date'])}, load average "
        f"{data['load_average'][0]:.2f} at its end"
        for data in big["sites"].values()
    ]
    samples = [
        (data["title"], phase, side, ", ".join(f"{v:.2f}" for v in data[phase][side]["samples"]))
        for data in big["sites"].values()
        for phase in ("cold", "nochange")
        for side in data[phase]
    ]
    return "\n".join(
        [
            BIG_HEADING,
            "",
            f"Run {big['date']}, load average at start {big['load_average_start'][0]:.2f}, "
            f"at end {big['load_average_end'][0]:.2f}; {big['seconds']:.0f} s. "
            "`python -m bench.run --only big`; how the sites are made and measured: "
            "bench/README.md. Peak RSS is each side's own process (the engine's memory is "
            "shared by both and not counted); the docker side is the CLI's legacy builder "
            "(`DOCKER_BUILDKIT=0`), the same engine code as docker-py's build.",
            "",
            _table(headers, big_rows(big)),
            "",
            "When each site ran: " + "; ".join(dates) + ".",
            "",
            "Samples (seconds, in run order):",
            "",
            _table(("site", "phase", "side", "seconds"), samples),
            "",
        ]
    )


def merge_into(markdown_path: Path, section: str, heading: str = BIG_HEADING) -> str:
    """results.md with the section under `heading` replaced (or added at the end): the rest
    of the file, from earlier runs of the other scenarios, stays as it is."""
    text = markdown_path.read_text() if markdown_path.exists() else "# shipit benchmark results\n"
    start = text.find(heading)
    if start >= 0:
        following = text.find("\n## ", start + len(heading))
        text = text[:start] + (text[following + 1 :] if following >= 0 else "")
    return text.rstrip() + "\n\n" + section
