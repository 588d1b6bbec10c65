"""Tag templates: which tags an image gets in each registry, drawn from git.

A template is literal text with placeholders, as in `tags = ["{sha}", "{major}.{minor}",
"latest"]`:

    {sha}        first 12 hex digits of the commit, "-dirty" with uncommitted changes
    {sha_long}   the full commit id, "-dirty" likewise
    {branch}     the branch, made safe for a tag ("feature/login" -> "feature-login")
    {version}    a semver git tag on the commit without its "v" ("1.4.2", "2.0.0-rc.1")
    {major} {minor} {patch}   its parts; missing for a prerelease, which only {version} names
    {date}       the commit's date in UTC, YYYYMMDD

A template whose placeholder has no value (no semver tag, a detached HEAD, outside git) is
skipped, with the reason. Fixed tags name one build: those with {sha}, {sha_long} or
{version}. Every other tag moves from build to build (latest, {branch}, {major}, {date}, plain
text), so a push sets fixed tags first and moves the others only once every fixed tag holds the
image in every registry: a failed push never leaves `latest` pointing at a half-published image.
"""

from __future__ import annotations

import datetime
import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from shipit.errors import ConfigError
from shipit.reference import TAG_HINT, is_valid_tag
from shipit.vcs import SHORT_SHA_LENGTH, git, is_full_sha

DEFAULT_TAGS = ("{sha}", "latest")
PLACEHOLDERS = ("sha", "sha_long", "branch", "version", "major", "minor", "patch", "date")
# The placeholders that name one build; a tag made with any of them never moves.
FIXED_PLACEHOLDERS = frozenset({"sha", "sha_long", "version"})
SETTING = "tags"

_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_UNSAFE_IN_TAG = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_TAG = 128


@dataclass(frozen=True)
class GitFacts:
    """What tags are made of. Any field may be "" when git does not know it."""

    commit: str = ""
    dirty: bool = False
    branch: str = ""
    tags_at_head: tuple[str, ...] = ()
    commit_date: str = ""  # YYYYMMDD, UTC
    # The short id the image was built as: set it from the image's version label so that
    # {sha} is what the build used (outside git that is "build-<id>").
    short_id: str = ""


@dataclass(frozen=True)
class Version:
    """A semantic version read off a git tag, for the {version} {major} {minor} {patch}
    placeholders."""

    major: int
    minor: int
    patch: int
    prerelease: str
    build: str

    @property
    def text(self) -> str:
        """For a tag: no "v", and "+" (not allowed in a tag) written as "-", as
        docker/metadata-action does."""
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += f"-{self.prerelease}"
        if self.build:
            text += f"-{self.build}"
        return text

    def precedence(self) -> tuple[int, int, int, int, str]:
        # A release sorts above its prereleases; prereleases compare as text (good enough
        # to pick one of several tags on one commit, which is all this is for).
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, self.prerelease)


def parse_version(tag: str) -> Version | None:
    matched = _SEMVER.match(tag)
    if matched is None:
        return None
    return Version(
        int(matched["major"]),
        int(matched["minor"]),
        int(matched["patch"]),
        matched["pre"] or "",
        matched["build"] or "",
    )


def newest_version(tags: Iterable[str]) -> Version | None:
    versions = [version for version in map(parse_version, tags) if version is not None]
    return max(versions, key=Version.precedence, default=None)


def safe_branch(branch: str) -> str:
    """A branch name as a tag: runs of other characters become "-", no leading "." or "-"."""
    return _UNSAFE_IN_TAG.sub("-", branch).lstrip(".-")[:_MAX_TAG]


@dataclass(frozen=True)
class PlannedTag:
    tag: str
    template: str
    moving: bool


@dataclass(frozen=True)
class SkippedTemplate:
    template: str
    reason: str

    def one_line(self) -> str:
        return f"tag template {self.template!r} skipped: {self.reason}"


@dataclass(frozen=True)
class TagPlan:
    tags: tuple[PlannedTag, ...]
    skipped: tuple[SkippedTemplate, ...]

    @property
    def fixed(self) -> tuple[str, ...]:
        """Set first."""
        return tuple(planned.tag for planned in self.tags if not planned.moving)

    @property
    def moving(self) -> tuple[str, ...]:
        """Set only after every fixed tag succeeded in every registry."""
        return tuple(planned.tag for planned in self.tags if planned.moving)

    @property
    def ordered(self) -> tuple[str, ...]:
        return self.fixed + self.moving


def placeholders_of(template: str, setting: str = SETTING) -> tuple[str, ...]:
    """The placeholders a template uses; ConfigError for unknown ones or format syntax."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"{setting}: tag template {template!r} is not valid: {exc}",
            "write placeholders as {sha}, {branch}, {version} ...",
        ) from exc
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise ConfigError(
                f"{setting}: tag template {template!r} has an unknown placeholder "
                f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}",
                "known placeholders: " + ", ".join(f"{{{known}}}" for known in PLACEHOLDERS),
            )
        names.append(name)
    return tuple(names)


_SAMPLE = {
    "sha": "0123456789ab",
    "sha_long": "0123456789abcdef0123456789abcdef01234567",
    "branch": "main",
    "version": "1.2.3",
    "major": "1",
    "minor": "2",
    "patch": "3",
    "date": "20260101",
}


def validate_templates(templates: Sequence[str], setting: str = SETTING) -> tuple[str, ...]:
    """Checks each template's placeholders and that its literal text makes a valid tag."""
    if not templates:
        raise ConfigError(
            f"{setting} is empty", f"give at least one tag template, e.g. {list(DEFAULT_TAGS)}"
        )
    for template in templates:
        placeholders_of(template, setting)
        sample = template.format(**_SAMPLE)
        if not is_valid_tag(sample):
            raise ConfigError(
                f"{setting}: tag template {template!r} does not make a valid tag (e.g. {sample!r})",
                TAG_HINT,
            )
    return tuple(templates)


def is_moving(template: str) -> bool:
    return not FIXED_PLACEHOLDERS.intersection(placeholders_of(template))


def values_of(facts: GitFacts) -> tuple[dict[str, str], dict[str, str]]:
    """(placeholder -> value, placeholder -> why it has none)."""
    values: dict[str, str] = {}
    missing: dict[str, str] = {}
    dirty = "-dirty" if facts.dirty else ""
    short = facts.short_id or (facts.commit[:SHORT_SHA_LENGTH] + dirty if facts.commit else "")
    if short:
        values["sha"] = short
    else:
        missing["sha"] = "not a git checkout"
    if facts.commit:
        values["sha_long"] = facts.commit + dirty
    else:
        missing["sha_long"] = "not a git checkout"
    branch = safe_branch(facts.branch)
    if branch:
        values["branch"] = branch
    else:
        missing["branch"] = "HEAD is not on a branch"
    version = newest_version(facts.tags_at_head)
    if version is None:
        for name in ("version", "major", "minor", "patch"):
            missing[name] = "no semver git tag (v1.2.3) on the commit"
    else:
        values["version"] = version.text
        if version.prerelease:
            for name in ("major", "minor", "patch"):
                missing[name] = f"{version.text} is a prerelease"
        else:
            values.update(major=str(version.major), minor=str(version.minor))
            values["patch"] = str(version.patch)
    if facts.commit_date:
        values["date"] = facts.commit_date
    else:
        missing["date"] = "not a git checkout"
    return values, missing


def plan_tags(templates: Sequence[str], facts: GitFacts, setting: str = SETTING) -> TagPlan:
    """The tags to set, fixed ones before moving ones, each once; and the skipped templates."""
    values, missing = values_of(facts)
    planned: list[PlannedTag] = []
    skipped: list[SkippedTemplate] = []
    seen: set[str] = set()
    for template in templates:
        names = placeholders_of(template, setting)
        absent = [name for name in names if name not in values]
        if absent:
            reasons = sorted({f"{{{name}}}: {missing[name]}" for name in absent})
            skipped.append(SkippedTemplate(template, "; ".join(reasons)))
            continue
        tag = template.format(**values)
        if not is_valid_tag(tag):
            raise ConfigError(
                f"{setting}: tag template {template!r} makes {tag!r}, which is not a valid tag",
                TAG_HINT,
            )
        if tag not in seen:
            seen.add(tag)
            planned.append(PlannedTag(tag, template, moving=is_moving(template)))
    ordered = [tag for tag in planned if not tag.moving] + [tag for tag in planned if tag.moving]
    return TagPlan(tuple(ordered), tuple(skipped))


def _ci_branch(environ: Mapping[str, str]) -> str:
    """CI checks out a detached HEAD; its variables still name the branch."""
    if environ.get("GITHUB_REF_TYPE") == "branch":
        return environ.get("GITHUB_REF_NAME", "")
    return environ.get("CI_COMMIT_BRANCH", "")


def git_facts(
    project_dir: Path, environ: Mapping[str, str] | None = None, commit: str = "HEAD"
) -> GitFacts:
    """What git knows of `commit` (default HEAD). The branch is HEAD's, and "dirty" is
    whether the work tree below the project differs from HEAD."""
    environ = os.environ if environ is None else environ
    full = git(project_dir, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}") or ""
    if not full:
        return GitFacts()
    # Only what is below the project counts, as for the build's own tag (vcs.revision).
    dirty = bool(git(project_dir, "status", "--porcelain", "--", "."))
    branch = git(project_dir, "symbolic-ref", "-q", "--short", "HEAD") or _ci_branch(environ)
    tags = tuple((git(project_dir, "tag", "--points-at", full) or "").split())
    seconds = git(project_dir, "show", "-s", "--format=%ct", full) or ""
    date = (
        datetime.datetime.fromtimestamp(int(seconds), datetime.UTC).strftime("%Y%m%d")
        if seconds.isdigit()
        else ""
    )
    return GitFacts(full, dirty, branch, tags, date)


def plan_for_image(
    project_dir: Path,
    templates: Sequence[str],
    revision: str,
    built_as: str,
    environ: Mapping[str, str] | None = None,
) -> TagPlan:
    """The tags of an image that shipit built: from the commit it was built from (its
    org.opencontainers.image.revision label), not whatever HEAD is now, with {sha} the tag it
    was built as (its org.opencontainers.image.version label: the 12-digit id, "-dirty", or
    "build-<id>" outside git)."""
    needed = {name for template in templates for name in placeholders_of(template)}
    # {sha} is the tag the image was built as: git is asked only for the other placeholders
    # (five git calls would cost every push, the no-change one included).
    asks_git = bool(needed - {"sha"}) and revision
    facts = git_facts(project_dir, environ, revision) if asks_git else GitFacts()
    if not facts.commit and is_full_sha(revision):
        # Built where git knew no commit but CI did (GITHUB_SHA): the label still holds it.
        facts = replace(facts, commit=revision)
    facts = replace(facts, short_id=built_as, dirty=built_as.endswith("-dirty"))
    return plan_tags(templates, facts)
