"""The bench's report: the main table with targets and verdicts, and bench/results.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

SIDES = ("shipit", "plain")
# shipit / script ratios (start-up: shipit / `python -c pass`; upload: bytes / changed layer;
# multi_cold: shipit / buildx; multi_nochange: shipit with two platforms / with one).
# Cold ship: the target once shipit compressed with ISA-L (it was 0.5 before).
TARGETS = {
    "cold": 0.2,
    "nochange": 0.35,
    "onepage": 0.7,
    "upload": 1.2,
    "startup": 2.5,
    "multi_cold": 1.0,
    "multi_nochange": 1.5,
}
# What each side of a scenario is, in the tables ("sides" in results.json; SIDES when absent).
SIDE_TITLES = {
    "shipit": "shipit (from `shipit ship --json`: `build.seconds`, `run.seconds` (run and smoke "
    "test; 0 when this very image passed its smoke test before), the push's per-registry "
    "`seconds`; the rest is process start-up, engine connection and what removing the "
    "container adds after the push)",
    "plain": "plain script (from its `set -x` trace)",
    "buildx": "buildx script (bench/buildx_pipeline.sh, from its `set -x` trace)",
    "multi": "shipit, two platforms (`--platform linux/amd64,linux/arm64`)",
    "single": "shipit, one platform (the engine's own)",
}


def sides_of(data: dict[str, Any]) -> tuple[str, str]:
    first, second = data.get("sides", SIDES)
    return first, second


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _s(value: float) -> str:
    return f"{value:.2f} s" if value == value else "-"  # noqa: PLR0124 - NaN check


def _verdict(ratio: float, target: float) -> str:
    if ratio != ratio:  # noqa: PLR0124
        return "-"
    if ratio <= target:
        return "met" if ratio <= target * 0.9 else "met (close)"
    return "MISSED"


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Rows of the main table plus the verdicts, stored in results.json too."""
    scenarios = results["scenarios"]
    rows: list[dict[str, Any]] = []

    def pair(label: str, key: str, target: float | None) -> None:
        data = scenarios.get(key)
        if not data:
            return
        first, second = sides_of(data)
        shipit, plain = data[first]["median"], data[second]["median"]
        ratio = shipit / plain
        n = len(data[first]["samples"])
        rows.append(
            {
                "scenario": f"{label} (n={n})",
                "shipit": _s(shipit),
                "baseline": _s(plain),
                "ratio": f"{ratio:.2f}",
                "ratio_value": ratio,
                "target": f"≤ {target:.2f}" if target else "(shown for round trips)",
                "verdict": _verdict(ratio, target) if target else "-",
            }
        )

    pair("cold ship", "cold", TARGETS["cold"])
    pair("no-change ship", "nochange", TARGETS["nochange"])
    pair("one-page change", "onepage", TARGETS["onepage"])
    pair(
        "multi-platform cold ship (amd64 + arm64, both smoke-tested) vs `docker buildx build "
        "--push` (no test)",
        "multi_cold",
        TARGETS["multi_cold"],
    )
    pair(
        "multi-platform no-change ship vs the one-platform no-change ship (shipit both)",
        "multi_nochange",
        TARGETS["multi_nochange"],
    )
    onepage = scenarios.get("onepage")
    if onepage:
        for registry in ("ecr", "dockerhub"):
            details = [d["upload"][registry] for d in onepage["shipit"]["details"]]
            plain = [d["upload"][registry] for d in onepage["plain"]["details"]]
            reported = median([d["reported"] for d in details])
            changed = median([d["changed_layer"] for d in details])
            ratio = reported / changed if changed else float("nan")
            rows.append(
                {
                    "scenario": f"one-page change, bytes uploaded to {registry} "
                    f"(changed layer {changed:,.0f} B)",
                    "shipit": f"{reported:,.0f} B",
                    "baseline": f"{median([d['new_layer_blobs'] for d in plain]):,.0f} B",
                    "ratio": f"{ratio:.2f} x layer",
                    "ratio_value": ratio,
                    "target": f"≤ {TARGETS['upload']:.2f} x layer",
                    "verdict": _verdict(ratio, TARGETS["upload"]),
                }
            )
    startup = scenarios.get("startup")
    if startup:
        base = startup["python -c pass"]["median"]
        for name in ("shipit --version", "shipit --help"):
            value = startup[name]["median"]
            ratio = value / base
            rows.append(
                {
                    "scenario": f"start-up: `{name}` vs `python -c pass` "
                    f"(n={len(startup[name]['samples'])})",
                    "shipit": _s(value),
                    "baseline": _s(base),
                    "ratio": f"{ratio:.2f}",
                    "ratio_value": ratio,
                    "target": f"≤ {TARGETS['startup']:.2f}",
                    "verdict": _verdict(ratio, TARGETS["startup"]),
                }
            )
    delay = results["counts"]["slow_delay_ms"]
    pair(f"slow registry (+{delay} ms/request): no-change ship", "slow_nochange", None)
    pair(f"slow registry (+{delay} ms/request): one-page change", "slow_onepage", None)
    for key, label in (("slow_nochange", "no-change"), ("slow_onepage", "one-page change")):
        data = scenarios.get(key)
        if not data:
            continue
        counts = {}
        for side in SIDES:
            per_run = [d["requests"] for d in data[side]["details"]]
            counts[side] = {
                registry: median([run[registry]["total"] for run in per_run])
                for registry in ("ecr", "dockerhub")
            }
        shipit_total = sum(counts["shipit"].values())
        plain_total = sum(counts["plain"].values())
        rows.append(
            {
                "scenario": f"slow registry, {label}: requests (ECR + Docker Hub)",
                "shipit": f"{counts['shipit']['ecr']:.0f} + {counts['shipit']['dockerhub']:.0f}",
                "baseline": f"{counts['plain']['ecr']:.0f} + {counts['plain']['dockerhub']:.0f}",
                "ratio": f"{shipit_total / plain_total:.2f}" if plain_total else "-",
                "ratio_value": shipit_total / plain_total if plain_total else None,
                "target": "(information)",
                "verdict": "-",
            }
        )
    return {"rows": rows}


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main_table(summary: dict[str, Any]) -> str:
    return _table(
        ("scenario", "shipit", "baseline", "shipit / baseline", "target", "result"),
        [
            (r["scenario"], r["shipit"], r["baseline"], r["ratio"], r["target"], r["verdict"])
            for r in summary["rows"]
        ],
    )


def _stage_table(data: dict[str, Any], side: str) -> str:
    stages: dict[str, list[float]] = {}
    for detail in data[side]["details"]:
        for name, seconds in detail["stages"].items():
            stages.setdefault(name, []).append(seconds)
    return _table(
        ("step", "median s"), [(name, f"{median(values):.2f}") for name, values in stages.items()]
    )


def markdown(results: dict[str, Any], summary: dict[str, Any]) -> str:
    scenarios = results["scenarios"]
    out = [
        "# shipit benchmark results",
        "",
        f"Run {results['date']} on {results['nproc']} CPUs ({results['cpu'] or 'unknown CPU'}), "
        f"kernel {results['kernel']}, Docker engine {results['engine']} "
        f"({results['storage_driver']}), Python {results['python']}, {results['shipit']}. "
        f"Whole bench: {results['bench_seconds']:.0f} s. Load average at start "
        f"{results['load_average_start'][0]:.2f}, at end {results['load_average_end'][0]:.2f} "
        "(above ~0.5 on this machine means something else was running: read the times as "
        "noisy).",
        "",
        "Times are medians of whole processes (`shipit ship` against `bench/plain_pipeline.sh`, "
        "and against `bench/buildx_pipeline.sh` for the multi-platform cold ship), on the same "
        "rendered example site, FROM the same base index in a loopback registry, and the same "
        "kind of loopback registries. How each scenario is set up: bench/README.md.",
        "",
    ]
    multi_run = results.get("multi_run")
    if multi_run:
        out += [
            f"The multi-platform rows are from a later run ({multi_run['date']}, `--only multi`, "
            f"{multi_run['seconds']:.0f} s, load average {multi_run['load_average_start'][0]:.2f} "
            f"at its start, {multi_run['load_average_end'][0]:.2f} at its end).",
            "",
        ]
    out += [main_table(summary), ""]
    out += _multi_pushed(scenarios.get("multi_cold"))
    onepage = scenarios.get("onepage")
    if onepage:
        rows: list[tuple[str, ...]] = []
        for side in SIDES:
            for registry in ("ecr", "dockerhub"):
                details = [d["upload"][registry] for d in onepage[side]["details"]]
                rows.append(
                    (
                        side,
                        registry,
                        f"{median([d['changed_layer'] for d in details]):,.0f}",
                        f"{median([d['reported'] for d in details]):,.0f}"
                        if side == "shipit"
                        else "-",
                        f"{median([d['new_layer_blobs'] for d in details]):,.0f}",
                        f"{median([d['new_blobs_all'] for d in details]):,.0f} "
                        f"({median([d['new_blob_count'] for d in details]):.0f} blobs)",
                    )
                )
        out += [
            "## One-page change: bytes uploaded (medians)",
            "",
            "`changed layer`: compressed size of the layer whose digest differs from the "
            "previous manifest. `reported`: shipit's `bytes_uploaded`. `new layer blobs`: "
            "layer blobs the registry's storage gained. `all new blobs`: also the image config "
            "and the manifest, which every push of a new image adds.",
            "",
            _table(
                (
                    "side",
                    "registry",
                    "changed layer B",
                    "reported B",
                    "new layer blobs B",
                    "all new blobs B",
                ),
                rows,
            ),
            "",
        ]
    out += ["## Where the time goes (medians per step)", ""]
    for key, title in (
        ("cold", "cold ship"),
        ("nochange", "no-change ship"),
        ("onepage", "one-page change"),
        ("slow_nochange", "slow registry, no-change"),
        ("slow_onepage", "slow registry, one-page change"),
        ("multi_cold", "multi-platform cold ship"),
        ("multi_nochange", "multi-platform no-change ship"),
    ):
        data = scenarios.get(key)
        if not data:
            continue
        out += [f"### {title}", ""]
        for side in sides_of(data):
            out += [f"{SIDE_TITLES[side]}:", "", _stage_table(data, side), ""]
    for key, title in (("slow_nochange", "no-change"), ("slow_onepage", "one-page change")):
        data = scenarios.get(key)
        if not data:
            continue
        request_rows: list[tuple[str, ...]] = []
        for side in SIDES:
            for registry in ("ecr", "dockerhub"):
                runs = [d["requests"][registry] for d in data[side]["details"]]
                methods = sorted({m for run in runs for m in run if m not in ("total",)})
                request_rows.append(
                    (
                        side,
                        registry,
                        ", ".join(
                            f"{m} {median([run.get(m, 0) for run in runs]):.0f}" for m in methods
                        ),
                        f"{median([run['total'] for run in runs]):.0f}",
                    )
                )
        out += [
            f"## Requests through the slow proxy, {title} (medians per ship)",
            "",
            "`tls-probe`: the engine first tries HTTPS on a loopback registry; `connections`: "
            "TCP connections opened (not requests).",
            "",
            _table(("side", "registry", "by method", "requests"), request_rows),
            "",
        ]
    out += [
        "## Samples",
        "",
        "In run order; the load average (1 minute) was taken when the scenario ended.",
        "",
        _table(
            ("scenario", "side", "seconds", "min", "load avg"),
            [
                (
                    key,
                    side,
                    ", ".join(f"{v:.2f}" for v in data[side]["samples"]),
                    f"{data[side]['min']:.2f}",
                    f"{data['load_average'][0]:.2f}",
                )
                for key, data in scenarios.items()
                if key != "startup"
                for side in sides_of(data)
            ]
            + [
                (
                    "startup",
                    name,
                    ", ".join(f"{v:.3f}" for v in value["samples"]),
                    f"{value['min']:.3f}",
                    "",
                )
                for name, value in scenarios.get("startup", {}).items()
                if name != "load_average"
            ],
        ),
        "",
    ]
    return "\n".join(out)


def _multi_pushed(data: dict[str, Any] | None) -> list[str]:
    """What each side of the multi-platform cold ship pushed, as the bench checked it: one
    index under both tags in both registries, naming an image of each platform."""
    if not data:
        return []
    rows = []
    for side in sides_of(data):
        index = data[side]["details"][-1]["index"]
        rows.append(
            (
                side,
                ", ".join(index["platforms"]),
                str(index["other_entries"]),
                f"`{index['digest'][:19]}`",
            )
        )
    return [
        "## Multi-platform cold ship: what each side pushed",
        "",
        "Checked after every run: both registries serve one index under both tags, naming an "
        "image of each platform (shipit's: the images it built and smoke-tested, the digest "
        "its `--json` report gives, which also says `ok`); both sides' indexes have the same "
        "platforms. `other entries`: index entries that are no image (buildx adds a "
        "provenance attestation per platform by default).",
        "",
        _table(("side", "platforms", "other entries", "index digest (last run)"), rows),
        "",
    ]
