"""The CI systems `shipit init --ci` writes a workflow for, and whether shipit runs in one.
Apart from shipit/scaffold.py so that every command's start-up does not import what only
`init` needs."""

from collections.abc import Mapping
from enum import StrEnum

# What CI=... says "not CI" with (a developer who exports CI=false to see rich output).
_NOT_CI = ("", "0", "false", "no", "off")


class Ci(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    NONE = "none"


def in_ci(environ: Mapping[str, str]) -> bool:
    """The convention of CI services (GitHub Actions, GitLab CI, CircleCI, ...): CI=true.
    The one rule for plain output, progress bars and the ECR token cache's default."""
    return environ.get("CI", "").strip().lower() not in _NOT_CI
