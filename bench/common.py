"""What every scenario of the bench shares: its failure, its progress lines, the registries
a side ships to, a whole process timed with its progress lines stamped, and the plain
scripts' steps read from their `set -x` traces."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.latency_proxy import LatencyProxy
from harness.registry_reader import RegistryReader
from harness.services import RegistryService, moto_ecr_password
from shipit.errors import ShipitError

PYTHON = sys.executable
HUB_USER = "bench-ci"


class BenchFailure(RuntimeError):
    """A side did not do its job: the numbers would be meaningless."""


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run_quiet(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BenchFailure(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------


@dataclass
class Registries:
    """One "ECR" and one "Docker Hub" registry, optionally each behind a latency proxy."""

    ecr: RegistryService
    hub: RegistryService
    hub_token: str
    ecr_proxy: LatencyProxy | None = None
    hub_proxy: LatencyProxy | None = None

    @classmethod
    def start(cls) -> Registries:
        token = "dckr_pat_" + secrets.token_urlsafe(24)
        ecr = RegistryService(username="AWS", password=moto_ecr_password()).start()
        try:
            hub = RegistryService(username=HUB_USER, password=token).start()
        except BaseException:
            ecr.close()
            raise
        return cls(ecr=ecr, hub=hub, hub_token=token)

    @property
    def ecr_host(self) -> str:
        return self.ecr_proxy.host if self.ecr_proxy else self.ecr.host

    @property
    def hub_host(self) -> str:
        return self.hub_proxy.host if self.hub_proxy else self.hub.host

    def add_proxies(self, delay: float) -> None:
        self.ecr_proxy = LatencyProxy(self.ecr.host, delay).start()
        self.hub_proxy = LatencyProxy(self.hub.host, delay).start()

    def remove_proxies(self) -> None:
        for proxy in (self.ecr_proxy, self.hub_proxy):
            if proxy is not None:
                proxy.stop()
        self.ecr_proxy = self.hub_proxy = None

    def request_counts(self) -> dict[str, dict[str, int]]:
        assert self.ecr_proxy and self.hub_proxy
        return {"ecr": self.ecr_proxy.snapshot(), "dockerhub": self.hub_proxy.snapshot()}

    def reset_counts(self) -> None:
        for proxy in (self.ecr_proxy, self.hub_proxy):
            if proxy is not None:
                proxy.reset()

    def close(self) -> None:
        self.remove_proxies()
        self.ecr.close()
        self.hub.close()

    def each(self) -> dict[str, RegistryService]:
        return {"ecr": self.ecr, "dockerhub": self.hub}


def get_manifest(
    registry: RegistryService, repository: str, reference: str
) -> tuple[str, dict[str, Any]]:
    """(digest, manifest) that the registry serves, straight from it (never via a proxy)."""
    with RegistryReader(registry.host, registry.username, registry.password) as reader:
        try:
            manifest = reader.get_manifest(repository, reference)
        except ShipitError as error:
            raise BenchFailure(
                f"{registry.host}/{repository}:{reference} is not served ({error.message})"
            ) from error
    return manifest.digest, manifest.content


def stored_blobs(registry: RegistryService) -> dict[str, int]:
    """digest -> size of every blob in the registry's storage (layers, configs, manifests)."""
    assert registry.root_dir is not None
    root = registry.root_dir / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    if not root.is_dir():
        return {}
    return {f"sha256:{data.parent.name}": data.stat().st_size for data in root.glob("*/*/data")}


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    side: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timed:
    seconds: float
    code: int
    stdout: str
    stderr: str
    first_line: float  # seconds from the start to the first stderr line (nan if none)
    after_last_line: float  # seconds from the last stderr line to the exit (nan if none)


def timed(args: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Timed:
    """Runs a whole process; stderr lines are timestamped as they arrive (progress)."""
    stamps: list[float] = []
    err_lines: list[str] = []
    out_chunks: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout, proc.stderr

    def read_stdout() -> None:
        out_chunks.append(out.read())

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    for line in err:
        stamps.append(time.perf_counter() - started)
        err_lines.append(line)
    try:
        code = proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    seconds = time.perf_counter() - started
    reader.join(10)
    stdout, stderr = "".join(out_chunks), "".join(err_lines)
    log.write_text(
        f"$ {' '.join(args)}\nexit {code} after {seconds:.3f} s\n"
        f"--- stdout\n{stdout}\n--- stderr (seconds since start)\n"
        + "".join(f"{stamp:7.3f} {line}" for stamp, line in zip(stamps, err_lines, strict=True))
    )
    nan = float("nan")
    return Timed(
        seconds,
        code,
        stdout,
        stderr,
        first_line=stamps[0] if stamps else nan,
        after_last_line=seconds - stamps[-1] if stamps else nan,
    )


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# Step names for the plain script's per-step breakdown, by the command a trace line starts.
PLAIN_STEPS = (
    ("docker buildx build", "build + push (buildx)"),
    ("docker build", "build"),
    ("docker run", "run"),
    ("curl", "wait for /"),
    ("sleep", "wait for /"),
    ("python", "ECR token + login"),
    (PYTHON, "ECR token + login"),
    ("docker login", "login"),
    ("docker tag", "tag"),
    ("docker push", "push"),
    ("docker rm", "stop"),
)
_TRACE_LINE = re.compile(r"^\++ (\d+\.\d+) (.*)$")


def plain_steps(trace: Path, ended: float) -> dict[str, float]:
    """Seconds per step of the plain script, from its `set -x` trace (EPOCHREALTIME)."""
    events = []
    for line in trace.read_text(errors="replace").splitlines():
        match = _TRACE_LINE.match(line)
        if match:
            events.append((float(match.group(1)), match.group(2)))
    steps: dict[str, float] = {}
    for (start, command), (end, _) in zip(events, [*events[1:], (ended, "")], strict=True):
        step = "shell"
        for prefix, name in PLAIN_STEPS:
            if command.startswith(prefix):
                step = name
                break
        # The ECR password pipe: python's line comes right before docker login's.
        if step == "login" and "--username AWS" in command:
            step = "ECR token + login"
        steps[step] = steps.get(step, 0.0) + max(0.0, end - start)
    return {name: round(seconds, 3) for name, seconds in steps.items()}


def ecr_token_from_cache(ecr_entry: dict[str, Any]) -> bool:
    """Whether shipit's push report for ECR says the token came from its cache."""
    return any(note.startswith("ECR token from cache") for note in ecr_entry["notes"])
