"""What the engine says while it pushes: the stream's events read into one PushStream, and a
refusal in that stream turned into the ShipitError it stands for.

docker-py does not raise when a registry refuses a push: the refusal is only a line in the
stream, so every stream is read to its end. The two image stores word a push differently:
the classic store ends with an `aux` event carrying the digest; the containerd store sends
no `aux` event, and its digest is only in the last status line,
`TAG: digest: sha256:... size: N`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shipit.errors import (
    AuthError,
    PushStreamError,
    RegistryUnreachableError,
    RepositoryMissingError,
    ShipitError,
    TagConflictError,
    TokenExpired,
)
from shipit.iam.refusal import refused_action
from shipit.progress import LayerProgress, Progress

_DIGEST_LINE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)")
# An HTTP status worth retrying, as a whole number in the engine's message ("... status: 503").
_TRANSIENT_STATUS = re.compile(r"\b(?:408|429|5\d\d)\b")
EXPIRED_TOKEN_WORDS = ("token has expired", "expired token")
_REFUSED_WORDS = (
    "unauthorized",
    "authentication required",
    "denied",
    "forbidden",
    "not authorized",
)
_UNREACHABLE_WORDS = ("connection refused", "no such host", "no route to host")
_TRANSIENT_WORDS = (
    "timeout",
    "timed out",
    "reset by peer",
    "broken pipe",
    "eof",
    "toomanyrequests",
    "too many requests",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    "internal server error",
    "throttl",
)


@dataclass
class PushStream:
    """What a push stream said, read to its end."""

    digest: str = ""
    size: int = 0
    # Short (12 hex) layer ids this push uploaded, as the stream names them: diff ids on the
    # classic store, compressed blob digests on the containerd store.
    pushed_layers: set[str] = field(default_factory=set)
    layers_existing: int = 0
    error: str = ""
    lines: list[str] = field(default_factory=list)


def read_push_event(
    event: Mapping[str, Any],
    result: PushStream,
    progress: Progress,
    layer_progress: LayerProgress | None,
) -> None:
    if "error" in event or "errorDetail" in event:
        detail = event.get("errorDetail") or {}
        message = event.get("error") or detail.get("message") or "unknown push error"
        result.error = str(message).strip()
        result.lines.append(result.error)
        return
    status = str(event.get("status", ""))
    layer = str(event.get("id", ""))
    aux = event.get("aux")
    if isinstance(aux, dict) and aux.get("Digest"):
        result.digest = str(aux["Digest"])
        result.size = int(aux.get("Size") or 0)
    elif not result.digest and (found := _DIGEST_LINE.search(status)):
        result.digest, result.size = found[1], int(found[2])
    detail = event.get("progressDetail") or {}
    if (
        layer_progress is not None
        and layer
        and status in ("Pushing", "Pushed", "Layer already exists")
    ):
        total = int(detail.get("total") or 0)
        done = int(detail.get("current") or 0) if status == "Pushing" else total
        layer_progress(layer, status.lower(), done, total)
    if status == "Pushed" and layer:
        result.pushed_layers.add(layer)
        progress(f"{layer}: pushed")
    elif (status == "Layer already exists" or status.startswith("Mounted from")) and layer:
        result.layers_existing += 1
        progress(f"{layer}: already in the registry")
    elif status and not detail:
        result.lines.append(f"{layer}: {status}" if layer else status)


def classify_stream_error(text: str, reference: str, auth_hint: str) -> ShipitError:
    """The error a refusal line of the push stream stands for."""
    lowered = text.lower()
    if any(words in lowered for words in EXPIRED_TOKEN_WORDS):
        return TokenExpired(f"push of {reference} was refused: the registry token has expired")
    if "immutable" in lowered or "cannot be overwritten" in lowered:
        return TagConflictError(f"push of {reference} was refused: {text}")
    if any(word in lowered for word in _REFUSED_WORDS):
        # ECR answers a missing permission with AWS's own sentence naming the action.
        refusal = refused_action(text)
        if refusal is None:
            return AuthError(f"push of {reference} was refused: {text}", auth_hint)
        return AuthError(
            f"push of {reference} was refused ({refusal.describe()}): {text}", refusal.hint()
        )
    if any(word in lowered for word in _UNREACHABLE_WORDS):
        return RegistryUnreachableError(
            f"cannot reach the registry of {reference}: {text}",
            "check that the registry is up and its host name",
        )
    if any(word in lowered for word in _TRANSIENT_WORDS) or _TRANSIENT_STATUS.search(lowered):
        return PushStreamError(f"push of {reference} failed: {text}", transient=True)
    if "name unknown" in lowered or "not found" in lowered or "does not exist" in lowered:
        return RepositoryMissingError(
            f"push of {reference} was refused: {text}",
            "check the repository name; ECR repositories must exist (ecr_create_repository)",
        )
    return PushStreamError(f"push of {reference} failed: {text}", transient=False)
