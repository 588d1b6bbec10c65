"""A PNG of the served page, rendered by headless Chromium, so users see what they ship."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shipit.errors import SmokeError, UsageError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
INSTALL_HINT = "install Chromium (Debian/Ubuntu: apt-get install chromium) or set SHIPIT_CHROMIUM"
DEFAULT_WINDOW = (1280, 800)
TIMEOUT_SECONDS = 60.0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A closed network makes Chromium's background services hang or spam; a page needs none.
_CHROMIUM_FLAGS = (
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)


@dataclass(frozen=True)
class Screenshot:
    path: Path
    width: int
    height: int


def parse_window(text: str) -> tuple[int, int]:
    width, separator, height = text.lower().partition("x")
    if not separator or not width.isdigit() or not height.isdigit():
        raise UsageError(f"window size {text!r} is not WIDTHxHEIGHT", "e.g. --window 1280x800")
    size = int(width), int(height)
    if not all(100 <= value <= 8000 for value in size):
        raise UsageError(f"window size {text} is out of range", "use 100 to 8000 pixels a side")
    return size


def find_chromium() -> str | None:
    configured = os.environ.get("SHIPIT_CHROMIUM")
    if configured:
        return shutil.which(configured)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def take(
    url: str, out: Path, window: tuple[int, int] = DEFAULT_WINDOW, chromium: str | None = None
) -> Screenshot:
    """Renders url at the window size into out; SmokeError if Chromium fails."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise SmokeError("cannot take a screenshot: Chromium is not installed", INSTALL_HINT)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shipit-chromium-") as profile:
        command = [
            chromium,
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            f"--screenshot={out}",
            url,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Chromium refuses to run as root with its sandbox on (containers, CI runners).
            command.insert(1, "--no-sandbox")
        out.unlink(missing_ok=True)
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SmokeError(
                f"Chromium did not finish the screenshot of {url} within {TIMEOUT_SECONDS:g} s",
                "check that the page loads in a browser",
            ) from exc
    if completed.returncode != 0 or not out.is_file():
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise SmokeError(f"Chromium could not take a screenshot of {url}: {last}")
    width, height = png_size(out.read_bytes())
    return Screenshot(path=out, width=width, height=height)
