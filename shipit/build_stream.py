"""What the engine says while it builds (`docker build`) or loads an image (`docker load`), and
how a build is cancelled: the build's stream read into its last lines, its image and the
images its steps added (BuildSteps); a load's or build's error turned into the BuildError it
stands for (a full disk says so); the build's connection half-closed on an interrupt
(stop_sending). engine.py sends the requests and reads the streams through these.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections import deque
from collections.abc import Mapping
from typing import Any

from shipit import interrupts
from shipit.errors import BuildError
from shipit.progress import Progress

BUILD_LOG_TAIL = 25

# What the engine says when its disk fills during a build (the context or a layer).
_DISK_FULL_TEXT = "no space left on device"
_DISK_FULL_HINT = (
    "the Docker engine's disk is full: free space there (e.g. `docker system prune`) "
    "and build again"
)


def disk_full_or(error: str, hint: str) -> str:
    """The disk-full hint when the engine's error says its disk is full, else `hint`."""
    return _DISK_FULL_HINT if _DISK_FULL_TEXT in error else hint


def load_failure(error: str) -> BuildError:
    return BuildError(
        f"the engine could not load the image: {error}",
        disk_full_or(
            error, "build with docker build instead (SHIPIT_BUILDER=docker) and report this"
        ),
    )


# A build step's result in the legacy builder's stream: " ---> 1a2b3c4d5e6f".
_STEP_RESULT = re.compile(r"^ ---> ([0-9a-f]{12})$")


class BuildSteps:
    """What a docker build's stream says: its last lines (for an error), the image, and the
    images its steps added (`made`; not a FROM's image, nor one from the build cache). Once
    the build is cancelled, its error is only the cancel's."""

    def __init__(self, progress: Progress, made: list[str]) -> None:
        self.progress = progress
        self.made = made
        self.log: deque[str] = deque(maxlen=BUILD_LOG_TAIL)
        self.image_id = ""
        self._reused = False

    def read(self, event: Mapping[str, Any]) -> None:
        if "error" in event:
            error = str(event["error"]).strip()
            self.log.append(error)
            if interrupts.pending():
                return
            raise BuildError(
                f"docker build failed: {error}",
                disk_full_or(
                    error, "fix templates/Dockerfile.j2 or the base image (build log below)"
                ),
                details="\n".join(self.log),
            )
        text = str(event.get("stream", "")).rstrip()
        if text:
            self.log.append(text)
            for line in text.splitlines():
                self.progress(line)
                self._note(line)
        aux = event.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            self.image_id = str(aux["ID"])

    def _note(self, line: str) -> None:
        starts_from = line.startswith("Step ") and " : FROM " in line.upper()
        if starts_from or line.strip() == "---> Using cache":
            self._reused = True
        elif (found := _STEP_RESULT.match(line)) is not None:
            if not self._reused:
                self.made.append(found.group(1))
            self._reused = False


def stop_sending(response: Any) -> None:
    """Half-closes the connection of a streamed answer: the engine sees its client go (and
    cancels a build) while what it still says can be read to the end. Called in a signal
    handler, so it raises nothing."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    # docker-py's ssh:// socket is an ssh process; closing its input ends the engine's side.
    process = getattr(sock, "proc", None)
    with contextlib.suppress(OSError, ValueError):
        if process is not None and process.stdin is not None:
            process.stdin.close()
        elif isinstance(sock, socket.socket):
            # The TCP connection's, under TLS too: the TLS session stays readable.
            socket.socket.shutdown(sock, socket.SHUT_WR)
