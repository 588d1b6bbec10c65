"""What shipit remembers between commands, in the project's .shipit/ folder: which images
passed their smoke tests (the newest, and a few before it), so that `shipit push` only ever
pushes a verified image."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shipit import __version__
from shipit.config import Settings
from shipit.errors import NotWritableError
from shipit.registries.ecr_cache import write_atomically
from shipit.smoke import Check

STATE_FILE = "state.json"


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def make_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    # The state folder ignores itself, so it never makes a user's tree dirty.
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        write_atomically(ignore, b"*\n")  # whole or absent: an empty one would stay empty


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    with NotWritableError.raised_for(
        "shipit's state folder",
        settings.state_dir,
        "make the project folder writable: shipit records the smoke pass there, and push needs it",
    ):
        make_state_dir(settings.state_dir)
        # A temporary file of its own: `shipit smoke` records a pass without the project's lock.
        data = json.dumps(state, indent=2, sort_keys=True).encode()
        write_atomically(_state_path(settings), data)


# Passes kept besides the newest: one per platform of a multi-platform build, and a few
# builds back (a ship of an earlier commit again).
KEPT_SMOKE_PASSES = 16


def record_smoke_passed(
    settings: Settings, image_id: str, build_id: str, url: str, checks: Sequence[Check] = ()
) -> None:
    """Its checks too: a later ship that reuses the pass attests them (attest/smoke.py)."""
    state = read_state(settings)
    record = {
        "image_id": image_id,
        "build_id": build_id,
        "url": url,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "shipit_version": __version__,
        "checks": [dataclasses.asdict(check) for check in checks],
    }
    state["smoke_passed"] = record
    passes = state.get("smoke_passes")
    passes = {
        key: value
        for key, value in (passes.items() if isinstance(passes, dict) else ())
        if key != image_id and isinstance(value, dict)
    }
    passes[image_id] = record
    newest = sorted(passes.items(), key=lambda item: str(item[1].get("at", "")))
    state["smoke_passes"] = dict(newest[-KEPT_SMOKE_PASSES:])
    _write_state(settings, state)


def smoke_pass_of(settings: Settings, image_id: str) -> dict[str, str] | None:
    """The pass's record without its checks (smoke_record_of has them)."""
    record = smoke_record_of(settings, image_id)
    if record is None:
        return None
    return {key: str(value) for key, value in record.items() if key != "checks"}


def smoke_record_of(settings: Settings, image_id: str) -> dict[str, Any] | None:
    """The recorded smoke pass of exactly this image by this shipit version, if any.

    An image id is the digest of the image's config, so the same id means the same files,
    labels and build id that passed. Another shipit version may check more, so its pass
    does not count."""
    state = read_state(settings)
    passes = state.get("smoke_passes")
    record = passes.get(image_id) if isinstance(passes, dict) else None
    if record is None:
        record = state.get("smoke_passed")
    if not isinstance(record, dict) or not image_id:
        return None
    if record.get("image_id") != image_id or record.get("shipit_version") != __version__:
        return None
    return dict(record)
