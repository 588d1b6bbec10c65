"""What git says about the project: the commit a build comes from and whether it is dirty."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SHORT_SHA_LENGTH = 12
# What CI services set to the commit they check out: GitHub Actions, GitLab CI.
CI_COMMIT_VARIABLES = ("GITHUB_SHA", "CI_COMMIT_SHA")
NO_COMMIT_HINT = (
    "commit the project to git (git init, git commit), install git, or set GITHUB_SHA or "
    "CI_COMMIT_SHA to the commit's 40-digit id"
)
_FULL_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Revision:
    commit: str  # full sha, or "" when neither git nor a CI variable knows it
    dirty: bool
    source: str = "git"  # "git", or the CI variable the commit came from
    why_none: str = ""  # why there is no commit, when there is none
    committed_at: int | None = None  # the commit's committer time (Unix seconds), from git

    @property
    def tag(self) -> str:
        """The image tag for this revision, or "" outside git (the caller picks another)."""
        if not self.commit:
            return ""
        return self.commit[:SHORT_SHA_LENGTH] + ("-dirty" if self.dirty else "")


def _start_git(project_dir: Path, *args: str) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(
            ["git", "-C", str(project_dir), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None


def _answer(process: subprocess.Popen[str] | None) -> str | None:
    if process is None:
        return None
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None
    return out.strip() if process.returncode == 0 else None


def git(project_dir: Path, *args: str) -> str | None:
    """What `git -C project_dir ARGS` prints, stripped; None when git fails or is missing."""
    return _answer(_start_git(project_dir, *args))


def is_full_sha(text: str) -> bool:
    return bool(_FULL_SHA.fullmatch(text))


def _ci_revision(environ: Mapping[str, str], why_not_git: str) -> Revision:
    """The commit a CI service says it checked out: its slim images often have no git, and
    a checkout without history has none either."""
    for name in CI_COMMIT_VARIABLES:
        value = environ.get(name, "").strip().lower()
        if is_full_sha(value):
            return Revision(commit=value, dirty=False, source=name)
        if value:
            return Revision("", False, "", f"{why_not_git} and {name} is not a 40-digit hex id")
    return Revision("", False, "", f"{why_not_git} and neither GITHUB_SHA nor CI_COMMIT_SHA is set")


def revision_started(
    project_dir: Path, ci_environ: Mapping[str, str] | None = None
) -> Callable[[], Revision]:
    """Starts git now and returns the function that waits for its answer: on a big tree
    `git status` takes a while (it stats every file), which can run beside other work.
    When git knows no commit, the CI variables in `ci_environ` (if given) are asked."""
    # The commit and its committer time in one answer; --no-show-signature keeps a user's
    # log.showSignature from adding gpg's lines to it.
    commit_asked = _start_git(
        project_dir, "log", "-1", "--no-show-signature", "--format=%H %ct", "HEAD", "--"
    )
    # Only what is below the project counts: an edit elsewhere in a monorepo is not this site's.
    status_asked = _start_git(project_dir, "status", "--porcelain", "--", ".")

    def answer() -> Revision:
        commit, _, committed = (_answer(commit_asked) or "").partition(" ")
        status = _answer(status_asked)
        if commit:
            committed_at = int(committed) if committed.isdigit() else None
            return Revision(commit=commit, dirty=bool(status), committed_at=committed_at)
        why = "git is not on PATH" if commit_asked is None else "git knows no commit of the project"
        return _ci_revision(ci_environ or {}, why)

    return answer


def revision(project_dir: Path, ci_environ: Mapping[str, str] | None = None) -> Revision:
    return revision_started(project_dir, ci_environ)()


def source_url(project_dir: Path) -> str:
    """The origin remote without any user or token in it: it ends up in an image label."""
    url = git(project_dir, "config", "--get", "remote.origin.url") or ""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme and parsed.hostname:
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))
    # scp-like "git@host:org/repo" carries a login name, never a password.
    return url


def git_installed() -> bool:
    return shutil.which("git") is not None


def in_work_tree(folder: Path) -> bool:
    return git(folder, "rev-parse", "--is-inside-work-tree") == "true"


def start_repository(folder: Path) -> bool:
    """`git init` in folder; False when git failed."""
    return git(folder, "init", "-q") is not None


def on_a_remote(folder: Path, commit: str) -> bool:
    """Whether a remote-tracking branch holds commit, as last fetched: a commit only here
    cannot be installed by anyone else."""
    return bool(git(folder, "branch", "-r", "--contains", commit))
