"""The CI systems `shipit init --ci` writes a workflow for. Apart from shipit/scaffold.py so
that every command's start-up does not import what only `init` needs."""

from enum import StrEnum


class Ci(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    NONE = "none"
