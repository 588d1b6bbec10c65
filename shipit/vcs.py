"""What git says about the project: the commit a build comes from and whether it is dirty."""

from __future__ import annotations

import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

SHORT_SHA_LENGTH = 12


@dataclass(frozen=True)
class Revision:
    commit: str  # full sha, or "" outside a git work tree
    dirty: bool

    @property
    def tag(self) -> str:
        """The image tag for this revision, or "" outside git (the caller picks another)."""
        if not self.commit:
            return ""
        return self.commit[:SHORT_SHA_LENGTH] + ("-dirty" if self.dirty else "")


def git(project_dir: Path, *args: str) -> str | None:
    """What `git -C project_dir ARGS` prints, stripped; None when git fails or is missing."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(project_dir), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def revision(project_dir: Path) -> Revision:
    commit = git(project_dir, "rev-parse", "--verify", "-q", "HEAD")
    if not commit:
        return Revision(commit="", dirty=False)
    # Only what is below the project counts: an edit elsewhere in a monorepo is not this site's.
    status = git(project_dir, "status", "--porcelain", "--", ".")
    return Revision(commit=commit, dirty=bool(status))


def source_url(project_dir: Path) -> str:
    """The origin remote without any user or token in it: it ends up in an image label."""
    url = git(project_dir, "config", "--get", "remote.origin.url") or ""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme and parsed.hostname:
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))
    # scp-like "git@host:org/repo" carries a login name, never a password.
    return url
