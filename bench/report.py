"""The bench's report: the main table with targets and verdicts, and bench/results.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

SIDES = ("shipit", "plain")
# shipit / script ratios (start-up: shipit / `python -c pass`; upload: bytes / changed layer).
# Cold ship: issue 20's target, once shipit compressed with ISA-L (issue 14's was 0.5).
TARGETS = {"cold": 0.2, "nochange": 0.35, "onepage": 0.7, "upload": 1.2, "startup": 2.5}


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
        shipit, plain = data["shipit"]["median"], data["plain"]["median"]
        ratio = shipit / plain
        n = len(data["shipit"]["samples"])
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
        ("scenario", "shipit", "plain script", "shipit / script", "target", "result"),
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
        "Times are medians of whole processes (`shipit ship` against `bench/plain_pipeline.sh`), "
        "on the same rendered example site and the same kind of loopback registries. "
        "How each scenario is set up: bench/README.md.",
        "",
        main_table(summary),
        "",
    ]
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
    ):
        data = scenarios.get(key)
        if not data:
            continue
        out += [
            f"### {title}",
            "",
            "shipit (from `shipit ship --json`: `build.seconds`, `run.seconds` (run and smoke "
            "test; 0 when this very image passed its smoke test before), the push's "
            "per-registry `seconds`; the rest is process start-up, engine connection and what "
            "removing the container adds after the push):",
            "",
            _stage_table(data, "shipit"),
            "",
            "plain script (from its `set -x` trace):",
            "",
            _stage_table(data, "plain"),
            "",
        ]
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
                for side in SIDES
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
