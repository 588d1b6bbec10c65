"""Parts of the benchmark that decide what it measures: a cold run's own base (the same layers,
new labelled configs, pushed into a real registry), the platforms it compares by docker's
rules, and the report's multi-platform rows with their targets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bench.base import BASE_LABEL, variant_layout
from bench.multi import platform_name, read_index
from bench.report import markdown, summarize
from harness.platform_base import push_platform_base
from harness.registry_reader import RegistryReader
from harness.services import RegistryService

REPO = Path(__file__).resolve().parent.parent
WRITER = REPO / "scripts" / "write_oci_layout.py"


def tiny_layout(where: Path) -> Path:
    """A two-platform OCI layout of one small file per platform, as testenv.sh writes nginx's."""
    tars = []
    for arch in ("amd64", "arm64"):
        path = where / f"{arch}.tar"
        with tarfile.open(path, "w") as tar:
            data = f"{arch}\n".encode()
            info = tarfile.TarInfo("etc/arch")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tars.append(path)
    layout = where / "layout"
    subprocess.run(
        [
            sys.executable,
            str(WRITER),
            str(layout),
            "--platform",
            f"linux/amd64={tars[0]}",
            "--platform",
            f"linux/arm64/v8={tars[1]}",
        ],
        check=True,
        capture_output=True,
    )
    return layout


def blob(layout: Path, digest: str) -> Any:
    return json.loads((layout / "blobs" / digest.replace(":", "/", 1)).read_bytes())


def test_a_cold_runs_base_has_the_same_layers_and_new_configs_with_its_label(
    tmp_path: Path,
) -> None:
    source = tiny_layout(tmp_path)
    variant = tmp_path / "variant"
    variant_layout(source, variant, "run-7")
    original = json.loads((source / "index.json").read_bytes())["manifests"]
    made = json.loads((variant / "index.json").read_bytes())["manifests"]
    assert [entry["platform"] for entry in made] == [entry["platform"] for entry in original]
    for old_entry, new_entry in zip(original, made, strict=True):
        old, new = blob(source, old_entry["digest"]), blob(variant, new_entry["digest"])
        assert new["layers"] == old["layers"]
        assert new["config"]["digest"] != old["config"]["digest"]
        config = blob(variant, new["config"]["digest"])
        assert config["config"]["Labels"] == {BASE_LABEL: "run-7"}
        assert config["architecture"] == blob(source, old["config"]["digest"])["architecture"]

    with RegistryService(auth="none") as registry:
        base = push_platform_base(registry.url, layout=source)
        own = push_platform_base(registry.url, tag="bench-7", layout=variant)
        assert own.index_digest != base.index_digest
        assert own.platforms == base.platforms == ("linux/amd64", "linux/arm64/v8")
        with RegistryReader(registry.host) as reader:
            for platform in own.platforms:
                served = reader.get_manifest("base/nginx", own.digest_of(platform))
                original_manifest = reader.get_manifest("base/nginx", base.digest_of(platform))
                assert served.content["layers"] == original_manifest.content["layers"]


def test_the_bench_reads_an_index_under_both_tags_and_names_its_platforms_as_docker_does(
    tmp_path: Path,
) -> None:
    layout = tiny_layout(tmp_path)
    with RegistryService(auth="none") as registry:
        pushed = push_platform_base(registry.url, repository="site/multi", tag="v1", layout=layout)
        push_platform_base(registry.url, repository="site/multi", tag="latest", layout=layout)
        index = read_index(registry, "site/multi", "v1")
    assert index.digest == pushed.index_digest
    assert index.platforms == ["linux/amd64", "linux/arm64"]
    assert index.other_entries == 0
    assert platform_name(MappingProxyType({"os": "linux", "architecture": "arm64"})) == (
        "linux/arm64"
    )
    assert platform_name("linux/arm64/v8") == "linux/arm64"
    assert platform_name("linux/arm/v7") == "linux/arm/v7"


def scenario(sides: tuple[str, str], first: list[float], second: list[float]) -> dict[str, Any]:
    def side(samples: list[float], name: str) -> dict[str, Any]:
        detail: dict[str, Any] = {"stages": {"step": samples[0]}}
        if name in ("shipit", "buildx"):
            detail["index"] = {
                "digest": "sha256:" + "a" * 64,
                "platforms": ["linux/amd64", "linux/arm64"],
                "other_entries": 2 if name == "buildx" else 0,
            }
        return {
            "median": sorted(samples)[len(samples) // 2],
            "min": min(samples),
            "samples": samples,
            "details": [detail for _ in samples],
        }

    return {
        "sides": list(sides),
        sides[0]: side(first, sides[0]),
        sides[1]: side(second, sides[1]),
        "load_average": (0.1, 0.1, 0.1),
    }


def test_the_report_gives_the_multi_platform_rows_their_targets() -> None:
    results: dict[str, Any] = {
        "counts": {"slow_delay_ms": 50},
        "scenarios": {
            "multi_cold": scenario(("shipit", "buildx"), [3.0, 2.9, 3.1], [3.2, 3.3, 3.4]),
            "multi_nochange": scenario(("multi", "single"), [0.5, 0.5, 0.5], [0.3, 0.3, 0.3]),
        },
        "date": "today",
        "nproc": 2,
        "cpu": "",
        "kernel": "k",
        "engine": "e",
        "storage_driver": "overlay2",
        "python": "3.11",
        "shipit": "shipit 1",
        "bench_seconds": 10,
        "load_average_start": (0.1, 0.1, 0.1),
        "load_average_end": (0.1, 0.1, 0.1),
    }
    rows = {row["scenario"].split(" (")[0]: row for row in summarize(results)["rows"]}
    cold = rows["multi-platform cold ship"]
    assert (cold["shipit"], cold["baseline"], cold["target"]) == ("3.00 s", "3.30 s", "≤ 1.00")
    assert cold["verdict"] == "met (close)"
    nochange = rows["multi-platform no-change ship vs the one-platform no-change ship"]
    assert (nochange["ratio"], nochange["target"], nochange["verdict"]) == (
        "1.67",
        "≤ 1.50",
        "MISSED",
    )
    text = markdown(results, summarize(results))
    assert "| buildx | linux/amd64, linux/arm64 | 2 |" in text
    assert "| multi_nochange | single | 0.30, 0.30, 0.30 |" in text
