"""What shipit remembers between commands, in the project's .shipit/ folder: which image
last passed its smoke test, so that `shipit push` only ever pushes a verified image."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from shipit import __version__
from shipit.config import Settings

STATE_FILE = "state.json"


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # The state folder ignores itself, so it never makes a user's tree dirty.
    ignore = settings.state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    path = _state_path(settings)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    temporary.replace(path)


def record_smoke_passed(settings: Settings, image_id: str, build_id: str, url: str) -> None:
    state = read_state(settings)
    state["smoke_passed"] = {
        "image_id": image_id,
        "build_id": build_id,
        "url": url,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "shipit_version": __version__,
    }
    _write_state(settings, state)


def smoke_pass_of(settings: Settings, image_id: str) -> dict[str, str] | None:
    """The recorded smoke pass of exactly this image by this shipit version, if any.

    An image id is the digest of the image's config, so the same id means the same files,
    labels and build id that passed. Another shipit version may check more, so its pass
    does not count."""
    record = read_state(settings).get("smoke_passed")
    if not isinstance(record, dict) or not image_id:
        return None
    if record.get("image_id") != image_id or record.get("shipit_version") != __version__:
        return None
    return {key: str(value) for key, value in record.items()}
