"""Publishing the smoke-tested image to its registries, concurrently and verified.

    targets.py   where each registry is and how to log in (resolved in the background)
    steps.py     one registry: push the sha tag, verify it, point `latest` at it
    retry.py     transient faults retried with backoff, an expired token renewed once
    report.py    what happened per registry and tag, and the one error for the exit code
    publish.py   the whole push: every registry's sha tag, then every registry's `latest`

The engine's push stream is read and classified beside the engine (shipit/push_stream.py).
"""

from shipit.push.publish import PushImage, image_to_push, prepared_blobs, publish
from shipit.push.report import PushReport
from shipit.push.targets import RegistryAccess

__all__ = [
    "PushImage",
    "PushReport",
    "RegistryAccess",
    "image_to_push",
    "prepared_blobs",
    "publish",
]
