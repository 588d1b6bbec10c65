"""Assets scenario of the bench: what a visitor's browser fetches, and what nginx spends on a
stylesheet, under shipit's configuration against the one it replaced (bench/README.md,
"Assets").

The example site is built and run by `shipit run`. The baseline serves the same image (the
same files, .gz included) with bench/nginx-before-static.conf.j2, the nginx.conf shipit
rendered before fingerprinting: `gzip on` (compressed per request), `expires 1h` on
/static/, nothing on pages. Both are mounted over /srv/shipit/nginx.conf of one image, so
the configuration is the only difference.

(a) Views: headless Chromium loads `/` with a new profile (first view), then again with the
same profile (repeat view), with a netlog each time: requests that went to the server, and
bytes received from it. nginx's access log of each container counts the same requests, and
the bench fails when the two disagree. Target: the repeat view makes no asset request.

(b) Requests per second for the fingerprinted stylesheet under wrk (50 connections, 2
threads, `Accept-Encoding: gzip`), the two sides in alternating order, each container on
the host's network (listening on a free loopback port), so docker's userland proxy is not
what is measured. Target: shipit at least 1.3 times the baseline. Each side's answer is
checked first: shipit's is its .gz as written (Content-Length its size), the baseline's
is compressed on the fly.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.report import _table, median
from harness.services import free_port

ASSETS_HEADING = "## Assets: first and repeat view, a precompressed stylesheet"
RPS_TARGET = 1.3
WRK_CONNECTIONS = 50
BASELINE_CONF = Path(__file__).resolve().parent / "nginx-before-static.conf.j2"
LOCAL_BASE = "shipit-local/nginx:bookworm"
# The flags of the test environment's notes, and every host name but the loopback's made
# unresolvable: Chromium's own background requests (time, updates, accounts) never leave.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
_STYLESHEET = re.compile(r"/static/style\.[0-9a-f]{12}\.css")
_FRAMEWORK = re.compile(r"/static/framework\.[0-9a-f]{12}\.css")
# The size of a CSS framework's minified stylesheet (Bootstrap 5's is about 230 KB, 30 KB
# gzipped), generated with a fixed seed; the example's own stylesheet is under 1 KB.
FRAMEWORK_BYTES = 200_000
SEED = 14
_ACCESS_LINE = re.compile(
    r'"(?:GET|HEAD) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+)'
)


class AssetsBench:
    def __init__(
        self,
        work: Path,
        run_id: str,
        shipit_cmd: list[str],
        base_env: dict[str, str],
        say: Callable[[str], None],
        failure: type[Exception],
    ) -> None:
        self.work = work / "assets"
        self.work.mkdir(parents=True, exist_ok=True)
        self.shipit_cmd = shipit_cmd
        self.say = say
        self.failure = failure
        self.image = f"shipit-bench/{run_id}-assets"
        self.prefix = f"shipit-bench-{run_id}-assets"
        self.project = self.work / "project"
        self.env = {
            **base_env,
            "CI": "true",
            "SHIPIT_PROJECT": str(self.project),
            "SHIPIT_IMAGE": self.image,
            "SHIPIT_BASE_IMAGE": LOCAL_BASE,
        }
        self.containers: list[str] = []
        self.image_id = ""

    # Setup

    def _shipit(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [*self.shipit_cmd, *args, "--json"],
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise self.failure(f"shipit {' '.join(args)}: {done.stderr.strip()[-400:]}")
        return dict(json.loads(done.stdout))

    def _start(self, side: str, conf: str, network_host: bool, port: int) -> str:
        name = f"{self.prefix}-{side}-{len(self.containers)}"
        conf_path = self.work / f"{name}.conf"
        conf_path.write_text(conf)
        conf_path.chmod(0o644)
        network = ["--network", "host"] if network_host else ["-p", f"127.0.0.1:{port}:8080"]
        mount = f"{conf_path}:/srv/shipit/nginx.conf:ro"
        subprocess.run(
            ["docker", "run", "-d", "--name", name, *network, "-v", mount, self.image_id],
            capture_output=True,
            check=True,
        )
        self.containers.append(name)
        _wait_for(f"http://127.0.0.1:{port}/healthz", self.failure)
        return name

    def _configs(self, build_id: str) -> dict[str, str]:
        """nginx.conf of each side: shipit's as its image holds it, the baseline's rendered."""
        copied = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--entrypoint",
                "cat",
                self.image_id,
                "/srv/shipit/nginx.conf",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        baseline = BASELINE_CONF.read_text()
        baseline = baseline.replace("{{ listen_port }}", "8080").replace("{{ build.id }}", build_id)
        return {"shipit": copied, "baseline": baseline}

    # Measures

    def views(self, url: str, container: str) -> dict[str, Any]:
        profile = Path(tempfile.mkdtemp(prefix="profile-", dir=self.work))
        result = {}
        for view in ("first", "repeat"):
            netlog = self.work / f"{container}-{view}.netlog.json"
            before = _access_lines(container)
            started = time.monotonic()
            done = subprocess.run(
                [
                    _chromium(self.failure),
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--log-net-log={netlog}",
                    "--dump-dom",
                    url + "/",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            seconds = time.monotonic() - started
            if done.returncode != 0 or "</html>" not in done.stdout:
                raise self.failure(f"chromium {view} view of {url}: {done.stderr.strip()[-300:]}")
            served = _served_by(container, before)
            seen = netlog_requests(netlog, url)
            if sorted(seen["paths"]) != sorted(line["path"] for line in served):
                raise self.failure(
                    f"{view} view: the netlog saw {seen['paths']}, nginx logged {served}"
                )
            result[view] = {
                "requests": len(served),
                "asset_requests": sum(line["path"].startswith("/static/") for line in served),
                "statuses": [f"{line['path']} {line['status']}" for line in served],
                "bytes_received": seen["bytes_received"],
                "body_bytes_sent": sum(line["bytes"] for line in served),
                "seconds": round(seconds, 2),
            }
        shutil.rmtree(profile, ignore_errors=True)
        return result

    def throughput(
        self, configs: dict[str, str], stylesheets: dict[str, str], rounds: int, seconds: int
    ) -> dict[str, Any]:
        """Per stylesheet (key -> its path), each side's wrk runs, in alternating order."""
        ports = {side: free_port() for side in configs}
        names = {}
        for side, conf in configs.items():
            listen = conf.replace(
                "listen 8080 default_server;", f"listen 127.0.0.1:{ports[side]} default_server;"
            )
            if listen == conf:
                raise self.failure(f"{side}: no `listen 8080 default_server;` in its nginx.conf")
            names[side] = self._start(side + "-rps", listen, True, ports[side])
        measured = {}
        for key, stylesheet in stylesheets.items():
            answers = {
                side: _check_answer(f"http://127.0.0.1:{ports[side]}{stylesheet}")
                for side in configs
            }
            if (
                answers["shipit"]["content_length"] is None
                or answers["baseline"]["content_length"] is not None
                or any(answer["content_encoding"] != "gzip" for answer in answers.values())
            ):
                raise self.failure(
                    f"{stylesheet}: expected shipit's .gz and the baseline's gzip on the fly, "
                    f"got {answers}"
                )
            samples: dict[str, list[dict[str, float]]] = {side: [] for side in configs}
            for number in range(rounds):
                order = ("shipit", "baseline") if number % 2 == 0 else ("baseline", "shipit")
                for side in order:
                    url = f"http://127.0.0.1:{ports[side]}{stylesheet}"
                    cpu_before = _cpu_ns(names[side])
                    rps, requests = _wrk(url, seconds, self.failure)
                    cpu = _cpu_ns(names[side]) - cpu_before
                    per_request = round(cpu / 1000 / requests, 1) if cpu >= 0 and requests else -1
                    samples[side].append(
                        {"requests_per_second": rps, "nginx_cpu_us_per_request": per_request}
                    )
                    self.say(f"assets: {key} stylesheet, {side}: {rps:.0f} requests/s")
            measured[key] = {
                "path": stylesheet,
                "answers": answers,
                "sides": {
                    side: {
                        "samples": values,
                        "median": median([value["requests_per_second"] for value in values]),
                        "median_cpu_us": median(
                            [value["nginx_cpu_us_per_request"] for value in values]
                        ),
                    }
                    for side, values in samples.items()
                },
            }
        return measured

    def run(self, rounds: int, seconds: int) -> dict[str, Any]:
        started = time.monotonic()
        repo = Path(__file__).resolve().parent.parent
        for folder in ("site", "templates"):
            shutil.copytree(repo / folder, self.project / folder)
        (self.project / "site" / "static" / "framework.css").write_text(framework_css())
        (self.project / "templates" / "framework.html.j2").write_text(
            '<!doctype html><link rel="stylesheet" href="{{ static(\'framework.css\') }}">\n'
        )
        port = free_port()
        ran = self._shipit("run", "--port", str(port))
        self.image_id = ran["image_id"]
        self.containers.append(ran["container"])
        url = f"http://127.0.0.1:{port}"
        home = urllib.request.urlopen(url + "/", timeout=10).read().decode()  # noqa: S310 - loopback
        found = _STYLESHEET.search(home)
        framework_page = urllib.request.urlopen(url + "/framework.html", timeout=10).read()  # noqa: S310
        framework = _FRAMEWORK.search(framework_page.decode())
        if not found or not framework:
            raise self.failure("the pages name no fingerprinted stylesheet")
        configs = self._configs(ran["build_id"])
        views = {"shipit": self.views(url, ran["container"])}
        baseline_port = free_port()
        baseline = self._start("baseline", configs["baseline"], False, baseline_port)
        views["baseline"] = self.views(f"http://127.0.0.1:{baseline_port}", baseline)
        stylesheets = {"example": found.group(0), "framework": framework.group(0)}
        rps = self.throughput(configs, stylesheets, rounds, seconds)
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "framework_bytes": FRAMEWORK_BYTES,
            "views": views,
            "throughput": rps,
            "rounds": rounds,
            "wrk_seconds": seconds,
            "seconds": round(time.monotonic() - started, 1),
        }

    def close(self) -> None:
        for name in self.containers:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        if self.project.is_dir():
            subprocess.run(
                [*self.shipit_cmd, "stop"],
                env=self.env,
                cwd=self.project,
                capture_output=True,
                check=False,
            )
        if self.image_id:
            subprocess.run(["docker", "rmi", "-f", self.image_id], capture_output=True, check=False)


def netlog_requests(netlog: Path, origin: str) -> dict[str, Any]:
    """The paths Chromium asked `origin` for over the network (not from its cache), and the
    bytes its sockets to that origin received, from a netlog."""
    data = json.loads(netlog.read_text())
    names = {number: name for name, number in data["constants"]["logEventTypes"].items()}
    host_port = origin.removeprefix("http://")
    urls: dict[int, str] = {}
    sent: set[int] = set()
    ours: set[int] = set()
    received = 0
    events = data["events"]
    for event in events:
        kind, source = names.get(event["type"], ""), event["source"]["id"]
        params = event.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and str(params.get("url", "")).startswith(origin + "/"):
            urls[source] = params["url"].removeprefix(origin)
        elif kind == "HTTP_TRANSACTION_SEND_REQUEST":
            sent.add(source)
        elif kind == "TCP_CONNECT_ATTEMPT" and params.get("address") == host_port:
            ours.add(source)
    for event in events:
        if names.get(event["type"]) == "SOCKET_BYTES_RECEIVED" and event["source"]["id"] in ours:
            received += int((event.get("params") or {}).get("byte_count", 0))
    return {
        "paths": [path for source, path in urls.items() if source in sent],
        "bytes_received": received,
    }


def _chromium(failure: type[Exception]) -> str:
    found = shutil.which("chromium")
    if found is None:
        raise failure("no chromium: run scripts/testenv.sh (it installs Debian's chromium)")
    return found


def _access_lines(container: str) -> int:
    return len(_access_log(container))


def _access_log(container: str) -> list[str]:
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=True)
    return logs.stdout.splitlines()


def _served_by(container: str, after: int) -> list[dict[str, Any]]:
    # The access log reaches docker's log a moment after the answer: settle for a stable count.
    deadline, last = time.monotonic() + 5, -1
    while True:
        lines = _access_log(container)[after:]
        if len(lines) == last or time.monotonic() > deadline:
            break
        last = len(lines)
        time.sleep(0.3)
    served = []
    for line in lines:
        match = _ACCESS_LINE.search(line)
        if match and match.group("path") != "/healthz":
            served.append(
                {
                    "path": match.group("path"),
                    "status": int(match.group("status")),
                    "bytes": int(match.group("bytes")),
                }
            )
    return served


def _wait_for(url: str, failure: type[Exception]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()  # noqa: S310 - loopback
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise failure(f"{url} did not answer within 30 s: {exc}") from exc
            time.sleep(0.1)


def _check_answer(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        body = answer.read()
        length = answer.headers.get("Content-Length")
        return {
            "content_encoding": answer.headers.get("Content-Encoding"),
            "content_length": int(length) if length is not None else None,
            "cache_control": answer.headers.get("Cache-Control"),
            "bytes": len(body),
        }


def _wrk(url: str, seconds: int, failure: type[Exception]) -> tuple[float, int]:
    if shutil.which("wrk") is None:
        raise failure("no wrk: run scripts/testenv.sh (it installs Debian's wrk)")
    done = subprocess.run(
        ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "-H", "Accept-Encoding: gzip", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    total = re.search(r"(\d+) requests in", done.stdout)
    if done.returncode != 0 or not rate or not total or "Non-2xx" in done.stdout:
        raise failure(f"wrk {url}: {done.stdout.strip()[-300:]} {done.stderr.strip()[-300:]}")
    return float(rate.group(1)), int(total.group(1))


def _cpu_ns(container: str) -> int:
    """CPU time the container's processes used (cgroup v1 cpuacct, else v2), -1 if unknown."""
    long_id = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{long_id}/cpuacct.usage")
    if v1.is_file():
        return int(v1.read_text())
    for v2 in Path("/sys/fs/cgroup").glob(f"**/docker-{long_id}.scope/cpu.stat"):
        usage = re.search(r"usage_usec (\d+)", v2.read_text())
        if usage:
            return int(usage.group(1)) * 1000
    return -1


def framework_css() -> str:
    """FRAMEWORK_BYTES of minified-looking CSS: rules of a few hundred class names and
    common properties, chosen with a fixed seed (it deflates about as a framework's does)."""
    chosen = random.Random(SEED)  # noqa: S311 - the same stylesheet every run
    words = ["btn", "card", "nav", "row", "col", "grid", "text", "bg", "border", "shadow"]
    words += ["alert", "badge", "modal", "form", "input", "table", "list", "item", "link"]
    properties = ["margin", "padding", "color", "background-color", "border-radius", "width"]
    properties += ["font-size", "line-height", "display", "gap", "opacity", "z-index"]
    values = ["0", "auto", "1rem", ".25rem", "50%", "100%", "flex", "none", "inherit"]
    rules = []
    size = 0
    while size < FRAMEWORK_BYTES:
        name = f".{chosen.choice(words)}-{chosen.choice(words)}-{chosen.randrange(1, 400)}"
        body = ";".join(
            f"{chosen.choice(properties)}:{chosen.choice(values)}"
            if chosen.random() < 0.8
            else f"{chosen.choice(properties)}:#{chosen.randrange(0x1000000):06x}"
            for _ in range(chosen.randrange(2, 7))
        )
        rule = f"{name}{{{body}}}"
        rules.append(rule)
        size += len(rule)
    return "".join(rules)[:FRAMEWORK_BYTES] + "\n"


def assets_verdicts(results: dict[str, Any]) -> dict[str, Any]:
    """The repeat view's target, and the requests-per-second one for each stylesheet."""
    shipit_repeat = results["views"]["shipit"]["repeat"]
    verdicts: dict[str, Any] = {
        "repeat_view_asset_requests": shipit_repeat["asset_requests"],
        "repeat_view": "met" if shipit_repeat["asset_requests"] == 0 else "MISSED",
    }
    for key, measured in results["throughput"].items():
        sides = measured["sides"]
        ratio = sides["shipit"]["median"] / sides["baseline"]["median"]
        verdicts[f"rps_{key}_ratio"] = round(ratio, 2)
        verdicts[f"rps_{key}"] = "met" if ratio >= RPS_TARGET else "MISSED"
    return verdicts


def assets_markdown(results: dict[str, Any]) -> str:
    verdicts = assets_verdicts(results)
    views = results["views"]
    rows: list[Sequence[str]] = []
    for view in ("first", "repeat"):
        row = [f"{view} view of /"]
        for side in ("shipit", "baseline"):
            seen = views[side][view]
            row.append(
                f"requests: {seen['requests']} ({seen['asset_requests']} assets), "
                f"{seen['bytes_received']:,} B"
            )
        row.append("no asset request" if view == "repeat" else "")
        row.append(verdicts["repeat_view"] if view == "repeat" else "")
        rows.append(row)
    titles = {
        "example": "the example's stylesheet",
        "framework": f"a {results['framework_bytes'] // 1000} KB stylesheet",
    }
    for key, measured in results["throughput"].items():
        sides = measured["sides"]
        rows.append(
            (
                f"{titles.get(key, key)} under wrk, {WRK_CONNECTIONS} connections, gzip "
                f"(n={results['rounds']})",
                *(
                    f"{sides[side]['median']:,.0f} req/s, {sides[side]['median_cpu_us']} µs "
                    "nginx CPU each"
                    for side in ("shipit", "baseline")
                ),
                f"≥ {RPS_TARGET}x (got {verdicts[f'rps_{key}_ratio']}x)",
                verdicts[f"rps_{key}"],
            )
        )
    headers = ("", "shipit (static(), gzip_static)", "baseline (gzip on, expires 1h)", "target")
    statuses = [
        (side, view, ", ".join(views[side][view]["statuses"]) or "none")
        for side in ("shipit", "baseline")
        for view in ("first", "repeat")
    ]
    samples = [
        (
            measured["path"],
            side,
            ", ".join(
                f"{value['requests_per_second']:,.0f}"
                for value in measured["sides"][side]["samples"]
            ),
        )
        for measured in results["throughput"].values()
        for side in ("shipit", "baseline")
    ]
    start, end = results["load_average_start"][0], results["load_average_end"][0]
    loads = f"{start:.2f} at start, {end:.2f} at end"
    return "\n".join(
        [
            ASSETS_HEADING,
            "",
            f"Run {results['date']}, {results['seconds']:.0f} s, load average {loads}. "
            "`python -m bench.run --only assets`; what is measured: bench/README.md (Assets). "
            "Requests: those that reached nginx (its access log, checked against Chromium's "
            "netlog); bytes: what Chromium's sockets received from the server.",
            "",
            _table((*headers, "result"), rows),
            "",
            "What each view asked the server for (path and status):",
            "",
            _table(("side", "view", "requests"), statuses),
            "",
            f"Requests per second, each wrk run {results['wrk_seconds']} s, in run order:",
            "",
            _table(("stylesheet", "side", "requests per second"), samples),
            "",
        ]
    )
