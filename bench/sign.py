"""`--only sign`: what signing costs a ship. Two shipit sides in one run, alternating: one
with a signing key (a PEM P-256 key; the signature, SLSA provenance, SBOM and smoke-test
attestations go to both registries), one without. The cold ship (fresh registries, no image,
no smoke pass) and the no-change ship (everything there, signature included) of each, side
by side.

Targets: the cold signed ship at most 0.3 s over the unsigned one; the no-change signed ship
no slower (within 0.05 s of noise: it reads one manifest per registry more).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.report import median

if TYPE_CHECKING:
    from bench.run import Bench

SIGN_HEADING = "## Signing: a signed ship against an unsigned one"
SIGN_SIDES = ("unsigned", "signed")
COLD_TARGET = 0.3  # s more
NOCHANGE_NOISE = 0.05  # s: "nothing more" within the spread of one run


def signing_key(folder: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / "bench-signing.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _forget_smoke_passes(bench: Bench) -> None:
    """Each cold ship runs its smoke test: the other side's pass of the same image would
    spare it."""
    state = bench.project / ".shipit" / "state.json"
    state.unlink(missing_ok=True)


def _ship(
    bench: Bench, side: str, env: dict[str, str], registries: Any, tag: str, label: str
) -> Any:
    bench.extra_env = env if side == "signed" else {}
    try:
        return bench.ship("shipit", registries, tag, f"{label}-{side}")
    finally:
        bench.extra_env = {}


def _signed_check(sample: Any, side: str, label: str, failure: type[Exception]) -> None:
    signatures = sample.detail.get("signatures", {})
    if side == "signed" and not all(signatures.values()):
        raise failure(f"{label}: the signed side pushed no signature: {signatures}")
    if side == "unsigned" and any(signatures.values()):
        raise failure(f"{label}: the unsigned side signed")


def scenario_sign(
    bench: Bench, cold_runs: int, nochange_runs: int, say: Any, failure: type[Exception]
) -> dict[str, Any]:
    started = time.monotonic()
    load_start = os.getloadavg()
    env = {"SHIPIT_SIGNING_KEY": str(signing_key(bench.work))}
    cold: dict[str, list[float]] = {side: [] for side in SIGN_SIDES}
    for index in range(cold_runs):
        bench.write_site(f"sign{index}-{bench.nonce}")
        tag = bench.render_context()
        for side in SIGN_SIDES if index % 2 == 0 else SIGN_SIDES[::-1]:
            bench.remove_images()
            bench.moto.reset()
            bench.fresh_cache()
            _forget_smoke_passes(bench)
            registries = bench.new_registries()
            try:
                sample = _ship(bench, side, env, registries, tag, f"signcold{index}")
            finally:
                bench.remove_images()
                bench.close_registries(registries)
            if sample.detail["built"] is not True or sample.detail["smoke_reused"]:
                raise failure(f"sign cold {index}: {side} did not build and smoke-test")
            _signed_check(sample, side, f"sign cold {index}", failure)
            cold[side].append(sample.seconds)
            say(f"  sign cold run {index + 1}/{cold_runs} {side}: {sample.seconds:.2f} s")
    nochange: dict[str, list[float]] = {side: [] for side in SIGN_SIDES}
    if nochange_runs:
        bench.remove_images()
        bench.moto.reset()
        bench.fresh_cache()
        bench.write_site(bench.nonce)
        tag = bench.render_context()
        registries = {side: bench.new_registries() for side in SIGN_SIDES}
        for side in SIGN_SIDES:
            _ship(bench, side, env, registries[side], tag, "signwarm")
        for index in range(nochange_runs):
            for side in SIGN_SIDES if index % 2 == 0 else SIGN_SIDES[::-1]:
                sample = _ship(bench, side, env, registries[side], tag, f"signnochange{index}")
                if set(sample.detail["status"].values()) != {"unchanged"}:
                    raise failure(f"sign no-change: {side} pushed: {sample.detail['status']}")
                if side == "signed" and any(sample.detail.get("signatures", {}).values()):
                    raise failure("sign no-change: the signed side signed again")
                nochange[side].append(sample.seconds)
                say(
                    f"  sign no-change run {index + 1}/{nochange_runs} {side}: "
                    f"{sample.seconds:.2f} s"
                )
    return {
        "cold": {side: {"samples": cold[side], "median": median(cold[side])} for side in SIGN_SIDES}
        if cold_runs
        else {},
        "nochange": {
            side: {"samples": nochange[side], "median": median(nochange[side])}
            for side in SIGN_SIDES
        }
        if nochange_runs
        else {},
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "seconds": round(time.monotonic() - started, 1),
    }


def sign_markdown(results: dict[str, Any]) -> str:
    rows = []
    for key, label, target, allowed in (
        (
            "cold",
            "cold ship, signed + 3 attestations vs unsigned",
            f"≤ +{COLD_TARGET} s",
            COLD_TARGET,
        ),
        ("nochange", "no-change ship, signed vs unsigned", "+0 s (noise ±0.05)", NOCHANGE_NOISE),
    ):
        sides = results.get(key) or {}
        if not sides:
            continue
        extra = sides["signed"]["median"] - sides["unsigned"]["median"]
        verdict = "met" if extra <= allowed else "MISSED"
        n = len(sides["signed"]["samples"])
        rows.append(
            f"| {label} (n={n}) | {sides['signed']['median']:.2f} s | "
            f"{sides['unsigned']['median']:.2f} s | {extra:+.2f} s | {target} | {verdict} |"
        )
    return "\n".join(
        [
            SIGN_HEADING,
            "",
            "Both sides are `shipit ship` to two loopback registries and moto, alternating in one "
            f"run (load average {results['load_average_start'][0]:.2f} at the start, "
            f"{results['load_average_end'][0]:.2f} at the end); medians.",
            "",
            "| scenario | signed | unsigned | signed - unsigned | target | verdict |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
