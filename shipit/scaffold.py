"""`shipit init`: a new site project that `shipit run` serves at once.

The skeleton is the bundled example site itself (shipit/skeleton links to site/ and
templates/) and a shipit.toml, plus a CI definition (shipit/ci/): a GitHub Actions workflow
(the default) or a GitLab CI/CD pipeline.

The CI definition installs the exact source given with --install, by default the one this
shipit was installed from: an index install pins its version (shipit-site==VERSION), a
`pip install git+URL@COMMIT` or a checkout with a network origin pins that commit. Anything
else (a wheel file, a local origin) gets a marked placeholder and a note: init always makes
the project.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shipit import DISTRIBUTION
from shipit.ci_kind import Ci
from shipit.errors import ConfigError, PreconditionError
from shipit.vcs import (
    git_installed,
    in_work_tree,
    is_full_sha,
    on_a_remote,
    revision,
    source_url,
    start_repository,
)

CI_FILES = {Ci.GITHUB: ".github/workflows/shipit.yml", Ci.GITLAB: ".gitlab-ci.yml"}
# Full commit ids of the release tags; the version goes beside each as a comment.
GITHUB_ACTIONS = {
    "CHECKOUT": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "SETUP_PYTHON": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "CONFIGURE_AWS_CREDENTIALS": ("e6de054238d6b7531b4efff3b6587d9aade6a06c", "v6.2.3"),
}
_PINNED_VCS = re.compile(r"^git\+(?:https|http|ssh)://(?:[\w.-]+@)?[^\s\"'$@{}]+@[0-9a-f]{40}$")
# shipit's distribution, in any spelling pip normalises to it.
_PINNED_VERSION = re.compile(r"^shipit[-_.]+site(?:\[[a-z,]+\])?==[0-9][0-9A-Za-z.+-]*$", re.I)
_SCP_LIKE = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>.+)$")
INSTALL_HINT = (
    f"pass --install {DISTRIBUTION}==VERSION, or git+https://HOST/OWNER/shipit@COMMIT "
    "(a full 40-character commit id), or --ci none"
)
# Marked so that a run of the unfilled CI definition fails at pip with this very text, and
# still a plain string, so that the workflow stays valid (actionlint, zizmor).
PLACEHOLDER = "REPLACE-ME: pip install spec for shipit"
OWN_FOLDER = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Install:
    """What the CI definition installs, and why it may need a look: "" or one line."""

    spec: str
    reason: str = ""

    @property
    def placeholder(self) -> bool:
        return self.spec == PLACEHOLDER


@dataclass(frozen=True)
class Scaffold:
    files: list[str]
    notes: list[str] = field(default_factory=list)


# Stored without the dot so the skeleton's own .gitignore does not hide files in shipit's repo.
_RENAMES = {"gitignore": ".gitignore"}
_IMAGE_LINE = re.compile(r'^image = ".*"$', re.M)


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    files: list[tuple[str, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda item: item.name):
        relative = f"{prefix}{_RENAMES.get(child.name, child.name)}"
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            files.extend(_walk(child, relative + "/"))
        else:
            files.append((relative, child))
    return files


def image_name_for(folder: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    return name or "my-site"


def validate_install(spec: str) -> str:
    """A pip requirement that pins one shipit: git+URL@COMMIT, or shipit-site==VERSION."""
    if _PINNED_VCS.match(spec) or _PINNED_VERSION.match(spec):
        return spec
    raise ConfigError(f"--install {spec!r} does not pin one version of shipit", INSTALL_HINT)


def _network_url(url: str) -> str | None:
    """The origin as a URL that a CI runner can clone: https for scp-like and ssh forms;
    None for a local path, which exists only on this machine."""
    matched = _SCP_LIKE.match(url)
    if matched:
        return f"https://{matched['host']}/{matched['path']}"
    parts = urlsplit(url)
    if parts.scheme in ("ssh", "git") and parts.hostname:
        return f"https://{parts.hostname}{parts.path}"
    if parts.scheme in ("https", "http") and parts.hostname:
        # Without any user or token: this goes into a file that gets committed.
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
    return None


def _placeholder(why: str) -> Install:
    return Install(PLACEHOLDER, why)


def _checkout_source(folder: Path) -> Install:
    url = source_url(folder)
    commit = revision(folder).commit
    if not commit:
        return _placeholder(f"{folder} is not a git checkout with a commit")
    origin = _network_url(url)
    if origin is None:
        where = f"a local path ({url}) as its origin" if url else "no origin remote"
        return _placeholder(f"the checkout it runs from has {where}")
    spec = f"git+{origin}@{commit}"
    if not on_a_remote(folder, commit):
        return Install(spec, f"commit {commit[:12]} is on no remote branch: push it before CI runs")
    return Install(spec)


def source_of(direct_url: str | None, own_folder: Path) -> Install:
    """What pip recorded in `direct_url` (PEP 610) about how this shipit was installed, or
    without a record the git checkout it runs from."""
    if not direct_url:
        return _checkout_source(own_folder)
    data = json.loads(direct_url)
    vcs = data.get("vcs_info", {})
    commit = str(vcs.get("commit_id", ""))
    if vcs.get("vcs") == "git" and is_full_sha(commit):
        url = _network_url(str(data.get("url", "")))
        if url is None:
            return _placeholder("it was installed from a git repository at a local path")
        return Install(f"git+{url}@{commit}")
    location = urlsplit(str(data.get("url", "")))
    if "dir_info" in data and location.scheme == "file":
        return _checkout_source(Path(unquote(location.path)))
    return _placeholder(f"it was installed from a file ({location.path.rsplit('/', 1)[-1]})")


def _own_distribution() -> metadata.Distribution | None:
    # shipit-site first: an environment that had shipit under its old name may still list it.
    names = metadata.packages_distributions().get("shipit", [])
    name = DISTRIBUTION if DISTRIBUTION in names or not names else names[0]
    found = list(metadata.distributions(name=name))
    # What an installer recorded (pip writes INSTALLER), before the egg-info a build leaves in
    # the checkout, which comes first on the path of `python -m shipit` run from there.
    installed = [distribution for distribution in found if distribution.read_text("INSTALLER")]
    return next(iter(installed or found), None)


def installed_source(
    distribution: metadata.Distribution | None = None, own_folder: Path = OWN_FOLDER
) -> Install:
    """distribution defaults to the one that holds this shipit, if any."""
    if distribution is None:
        distribution = _own_distribution()
    if distribution is None:
        return source_of(None, own_folder)
    recorded = distribution.read_text("direct_url.json")
    if recorded is None:
        # pip writes no direct_url.json for an install from an index: that index has it.
        return Install(f"{distribution.metadata['Name']}=={distribution.version}")
    return source_of(recorded, own_folder)


def _ci_text(ci: Ci, install: str, image: str) -> bytes:
    text = (resources.files("shipit") / "ci" / f"{ci.value}.yml").read_text(encoding="utf-8")
    for name, (commit, version) in GITHUB_ACTIONS.items():
        text = text.replace(f"@__{name}__", f"@{commit} # {version}")
    text = text.replace("__SHIPIT_INSTALL__", install).replace("__IMAGE__", image)
    return text.encode("utf-8")


def init_project(
    destination: Path, force: bool = False, ci: Ci = Ci.GITHUB, install: str | None = None
) -> Scaffold:
    """Writes the skeleton and the CI definition into destination and starts a git repository
    there when it is in none; refuses to overwrite unless force. Checks everything before it
    writes anything. The notes say what the user still has to do, one line each."""
    skeleton = resources.files("shipit") / "skeleton"
    files = _walk(skeleton)
    written_names = [relative for relative, _ in files]
    if ci is not Ci.NONE:
        written_names.append(CI_FILES[ci])
    existing = [relative for relative in written_names if (destination / relative).exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        raise PreconditionError(
            f"{destination} already has {shown}",
            "choose a new folder, or pass --force to overwrite those files",
        )
    chosen = Install(validate_install(install)) if install is not None else None
    if ci is not Ci.NONE and chosen is None:
        chosen = installed_source()
    image = image_name_for(destination)
    for relative, source in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        if relative == "shipit.toml":
            data = _IMAGE_LINE.sub(f'image = "{image}"', data.decode("utf-8"), count=1).encode()
        target.write_bytes(data)
    notes: list[str] = []
    if ci is not Ci.NONE and chosen is not None:
        target = destination / CI_FILES[ci]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_ci_text(ci, chosen.spec, image))
        notes.extend(_install_notes(chosen, CI_FILES[ci]))
    notes.extend(_repository_notes(destination))
    return Scaffold(written_names, notes)


def _install_notes(chosen: Install, ci_file: str) -> list[str]:
    if chosen.placeholder:
        return [
            f"{ci_file} installs a placeholder, as {chosen.reason}: set SHIPIT_INSTALL there "
            "to a pinned pip requirement for shipit, or re-run with --force --install SPEC"
        ]
    if chosen.reason:
        return [f"{ci_file} installs {chosen.spec}, but {chosen.reason}"]
    return []


def _repository_notes(destination: Path) -> list[str]:
    # As `cargo new` does: tags come from commits, so a project wants a repository at once.
    if not git_installed():
        return [
            f"git is not installed, so {destination} has no git repository: install git "
            "and run `git init` there"
        ]
    if in_work_tree(destination):
        return []
    if not start_repository(destination):
        return [f"`git init` failed in {destination}: run it there yourself"]
    return []
