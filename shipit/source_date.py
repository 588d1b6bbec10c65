"""When an image says it was made: the one time in its config's `created`, in every history
entry shipit adds and in its `org.opencontainers.image.created` label.

It is the source's time, not the build's, so that the same commit and settings give the same
image on any machine at any hour (reproducible-builds.org's SOURCE_DATE_EPOCH convention,
which BuildKit, ko and Jib honour too): SOURCE_DATE_EPOCH when it is set, else the commit's
committer time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from shipit.errors import ConfigError
from shipit.vcs import Revision

VARIABLE = "SOURCE_DATE_EPOCH"
# The last second RFC 3339 can write (9999-12-31T23:59:59Z).
_LATEST = 253_402_300_799


@dataclass(frozen=True)
class SourceDate:
    seconds: int
    origin: str  # where the time comes from, in words, for the build's progress line

    @property
    def rfc3339(self) -> str:
        """As the config, the history and the label spell it, e.g. 2026-12-04T03:54:22Z."""
        moment = dt.datetime.fromtimestamp(self.seconds, dt.UTC)
        return moment.isoformat().replace("+00:00", "Z")


def source_date(environ: Mapping[str, str], revision: Revision) -> SourceDate:
    """SOURCE_DATE_EPOCH (an integer of seconds since 1970, as `date +%s` prints it; empty
    counts as unset, as BuildKit reads it), else the commit's committer time.

    A dirty tree keeps its commit's time: its content is pinned by the build id, which the
    image carries, so the same edits give the same image; the time of the edits themselves
    (file times) is not the same in two checkouts. Without a commit time (no git, or a commit
    named only by a CI variable) the time is the Unix epoch, as ko and Jib write by default:
    any clock reading would make every build of the same input a new image."""
    value = environ.get(VARIABLE, "")
    if value:
        if not value.isascii() or not value.isdigit() or int(value) > _LATEST:
            raise ConfigError(
                f"{VARIABLE}={value[:40]!r} is not a time in seconds since 1970 (a whole "
                "number, before the year 10000)",
                "set it as `date +%s` prints it (e.g. $(git log -1 --format=%ct)), or unset "
                "it to date the image by its commit",
            )
        return SourceDate(int(value), f"from {VARIABLE}")
    if revision.committed_at is not None:
        return SourceDate(revision.committed_at, f"the time of commit {revision.commit[:12]}")
    return SourceDate(0, "the Unix epoch, as no commit time is known")
