"""`shipit init`: a new site project that `shipit run` serves at once.

The skeleton is the bundled example site itself (shipit/skeleton links to site/ and
templates/) and a shipit.toml, plus a CI definition (shipit/ci/): a GitHub Actions workflow
(the default) or a GitLab CI/CD pipeline.

shipit is not on PyPI, so the CI definition installs the exact source given with --install,
by default the one this shipit was installed from: a `pip install git+URL@COMMIT` records it,
and a checkout with an origin remote names it.
"""

from __future__ import annotations

import json
import re
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shipit.ci_kind import Ci
from shipit.errors import ConfigError, PreconditionError
from shipit.vcs import revision, source_url

CI_FILES = {Ci.GITHUB: ".github/workflows/shipit.yml", Ci.GITLAB: ".gitlab-ci.yml"}
# Full commit ids of the release tags; the version goes beside each as a comment.
GITHUB_ACTIONS = {
    "CHECKOUT": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "SETUP_PYTHON": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "CONFIGURE_AWS_CREDENTIALS": ("e6de054238d6b7531b4efff3b6587d9aade6a06c", "v6.2.3"),
}
_PINNED_VCS = re.compile(r"^git\+(?:https|http|ssh)://(?:[\w.-]+@)?[^\s\"'$@{}]+@[0-9a-f]{40}$")
_PINNED_VERSION = re.compile(r"^shipit(?:\[[a-z,]+\])?==[0-9][0-9A-Za-z.+-]*$")
_SCP_LIKE = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>.+)$")
INSTALL_HINT = (
    "pass --install git+https://HOST/OWNER/shipit@COMMIT (a full 40-character commit id), "
    "or --ci none"
)

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
    """A pip requirement that pins one shipit: git+URL@COMMIT, or shipit==VERSION."""
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


def source_of(direct_url: str | None, own_folder: Path) -> str | None:
    """A pinned requirement for the shipit that pip recorded in `direct_url` (PEP 610), or
    for the git checkout it was installed from (or runs from, without a record)."""
    folder: Path | None = own_folder
    if direct_url:
        data = json.loads(direct_url)
        vcs = data.get("vcs_info", {})
        commit = str(vcs.get("commit_id", ""))
        if vcs.get("vcs") == "git" and re.fullmatch(r"[0-9a-f]{40}", commit):
            url = _network_url(str(data.get("url", "")))
            return f"git+{url}@{commit}" if url else None
        location = urlsplit(str(data.get("url", "")))
        folder = Path(unquote(location.path)) if location.scheme == "file" else None
    if folder is None:
        return None
    origin = _network_url(source_url(folder))
    commit = revision(folder).commit
    return f"git+{origin}@{commit}" if origin and commit else None


def installed_source() -> str | None:
    try:
        recorded = metadata.distribution("shipit").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        recorded = None
    return source_of(recorded, Path(__file__).resolve().parent.parent)


def _ci_text(ci: Ci, install: str, image: str) -> bytes:
    text = (resources.files("shipit") / "ci" / f"{ci.value}.yml").read_text(encoding="utf-8")
    for name, (commit, version) in GITHUB_ACTIONS.items():
        text = text.replace(f"@__{name}__", f"@{commit} # {version}")
    text = text.replace("__SHIPIT_INSTALL__", install).replace("__IMAGE__", image)
    return text.encode("utf-8")


def init_project(
    destination: Path, force: bool = False, ci: Ci = Ci.GITHUB, install: str | None = None
) -> list[str]:
    """Writes the skeleton and the CI definition into destination; refuses to overwrite
    unless force. Checks everything before it writes anything."""
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
    if ci is not Ci.NONE:
        if install is None:
            install = installed_source()
            if install is None:
                raise ConfigError(
                    f"cannot tell which shipit the {ci.value} CI definition should install: "
                    "this one was not installed from a git repository with an origin remote",
                    INSTALL_HINT,
                )
        validate_install(install)
    image = image_name_for(destination)
    for relative, source in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        if relative == "shipit.toml":
            data = _IMAGE_LINE.sub(f'image = "{image}"', data.decode("utf-8"), count=1).encode()
        target.write_bytes(data)
    if ci is not Ci.NONE:
        assert install is not None  # checked above
        target = destination / CI_FILES[ci]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_ci_text(ci, install, image))
    return written_names
