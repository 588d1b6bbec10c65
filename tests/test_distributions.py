"""The sdist and the wheel as a user, an index or a packager gets them, built from a copy of
this checkout as it is now: the version comes from the git tag (and says it is unknown without
one), the wheel installs the `shipit` command as the distribution shipit-site, and the
unpacked sdist holds what its tests import and passes them."""

from __future__ import annotations

import email.message
import email.parser
import io
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TAG = "v9.8.7"
VERSION = "9.8.7"

pytestmark = pytest.mark.skipif(
    not (REPO / ".git").exists(), reason="builds from a git checkout (this is an unpacked sdist)"
)


def _run(*argv: str | Path, cwd: Path | None = None, **env: str) -> str:
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith(("SHIPIT_", "GIT_"))
    }
    done = subprocess.run(
        [str(part) for part in argv],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _git(repo: Path, *args: str) -> str:
    return _run(
        "git",
        "-C",
        repo,
        "-c",
        "user.name=shipit tests",
        "-c",
        "user.email=tests@shipit.invalid",
        "-c",
        "commit.gpgsign=false",
        *args,
    )


def _copy_tree(destination: Path) -> Path:
    """The files git tracks in this checkout, as they are on disk (uncommitted edits too)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
    ).stdout
    for name in listed.decode().split("\0"):
        source = REPO / name
        if not name or not os.path.lexists(source):
            continue  # deleted in the work tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return destination


def _checkout_copy(destination: Path, tag: str | None) -> Path:
    _copy_tree(destination)
    _git(destination, "init", "-q")
    _git(destination, "add", "-A")
    _git(destination, "commit", "-q", "-m", "the checkout under test")
    if tag:
        _git(destination, "tag", tag)
    return destination


def _build(source: Path, out: Path, *kinds: str) -> list[Path]:
    _run(sys.executable, "-m", "build", *kinds, "--outdir", out, source)
    return sorted(out.iterdir())


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`python -m build` of a checkout tagged v9.8.7: the sdist, and the wheel built from it."""
    root = tmp_path_factory.mktemp("tagged")
    source = _checkout_copy(root / "shipit", TAG)
    sdist, wheel = sorted(_build(source, root / "dist"), key=lambda path: path.suffix)
    assert (sdist.name, wheel.name) == (
        f"shipit_site-{VERSION}.tar.gz",
        f"shipit_site-{VERSION}-py3-none-any.whl",
    )
    return Built(sdist, wheel)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv where pip installed shipit-site from a folder of wheels, as from an index (no
    direct_url.json). --no-deps: what is checked here needs only shipit's own code."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--find-links",
        built.wheel.parent,
        "shipit-site",
    )
    yield folder


def test_the_wheel_carries_the_tag_s_version_and_the_distribution_name(built: Built) -> None:
    metadata = _wheel_metadata(built.wheel)
    assert metadata["Name"] == "shipit-site"
    assert metadata["Version"] == VERSION
    requirements = metadata.get_all("Requires-Dist") or []
    assert "docker>=7.2" in requirements
    assert 'docker[ssh]>=7.2; extra == "ssh"' in requirements
    assert not [r for r in requirements if r.startswith("docker[") and "extra ==" not in r]
    assert set(metadata.get_all("Provides-Extra") or []) == {"ssh", "dev"}
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert urls["Changelog"].endswith("/CHANGELOG.md")
    with zipfile.ZipFile(built.wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("shipit/_version.py").decode().endswith(f'__version__ = "{VERSION}"\n')
    assert {"shipit/help.txt", "shipit/ci/github.yml", "shipit/skeleton/site/site.toml"} <= names
    assert not [name for name in names if name.startswith(("tests/", "harness/"))]


def test_the_installed_command_reports_the_version_and_pins_it_for_ci(
    installed: Path, tmp_path: Path
) -> None:
    assert _run(installed / "bin" / "shipit", "--version") == f"shipit {VERSION}\n"
    probe = "from shipit.scaffold import installed_source; print(installed_source().spec)"
    assert _run(installed / "bin" / "python", "-c", probe, cwd=tmp_path) == (
        f"shipit-site=={VERSION}\n"
    )
    # What a build leaves in a checkout, first on the path of `python -c` run from there: not
    # the installed shipit.
    stray = tmp_path / "shipit_site.egg-info"
    stray.mkdir()
    (stray / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: shipit-site\nVersion: 0.0.1\n")
    (stray / "top_level.txt").write_text("shipit\n")
    assert _run(installed / "bin" / "python", "-c", probe, cwd=tmp_path) == (
        f"shipit-site=={VERSION}\n"
    )
    # An install of shipit under its old name, earlier on the path (an older user-site install).
    old_name = tmp_path / "older" / "shipit-0.1.0.dist-info"
    old_name.mkdir(parents=True)
    (old_name / "METADATA").write_text("Metadata-Version: 2.1\nName: shipit\nVersion: 0.1.0\n")
    (old_name / "INSTALLER").write_text("pip\n")
    (old_name / "top_level.txt").write_text("shipit\n")
    older = _run(
        installed / "bin" / "python", "-c", probe, cwd=installed, PYTHONPATH=str(old_name.parent)
    )
    assert older == f"shipit-site=={VERSION}\n"


def test_the_sdist_holds_what_its_tests_need_and_not_the_repository_s_ci(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    top = {name.split("/", 1)[0] for name in names}
    assert {"tests", "harness", "bench", "scripts", "site", "templates", "shipit"} <= top
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "PKG-INFO"} <= names
    assert {"tests/conftest.py", "harness/services.py", "shipit/_version.py"} <= names
    assert ".ci" not in top


# Unit tests (no engine) that import harness, tests.conftest and shipit, and run shipit on a
# copy of the example site.
SDIST_TESTS = ("tests/test_reference.py", "tests/test_ssh_extra.py")


def test_the_unpacked_sdist_passes_its_unit_tests(built: Built, tmp_path: Path) -> None:
    with tarfile.open(built.sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    unpacked = tmp_path / f"shipit_site-{VERSION}"
    where = _run(
        sys.executable,
        "-c",
        "import harness, shipit; print(harness.__file__); print(shipit.__version__)",
        cwd=unpacked,
    ).splitlines()
    assert where == [str(unpacked / "harness" / "__init__.py"), VERSION]
    report = _run(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-m",
        "not engine",
        *SDIST_TESTS,
        cwd=unpacked,
        DOCKER_HOST="tcp://127.0.0.1:9",
        # For the shipit the tests start, as for pytest itself (its pythonpath setting).
        PYTHONPATH=str(unpacked),
    )
    assert " passed" in report and "failed" not in report and "error" not in report, report


def test_an_untagged_checkout_builds_a_dev_version_and_a_plain_tree_an_unknown_one(
    tmp_path: Path,
) -> None:
    """A fresh clone without tags (a shallow CI checkout) and an export without git both build."""
    untagged = _checkout_copy(tmp_path / "untagged", tag=None)
    commit = _git(untagged, "rev-parse", "--short=9", "HEAD").strip()
    (wheel,) = _build(untagged, tmp_path / "dist-untagged", "--wheel")
    version = _wheel_metadata(wheel)["Version"]
    assert version.startswith("0.1.dev1+unknown.g"), version
    assert commit[:7] in version
    exported = _copy_tree(tmp_path / "exported")
    (wheel,) = _build(exported, tmp_path / "dist-exported", "--wheel")
    assert _wheel_metadata(wheel)["Version"] == "0.0+unknown"


def test_a_tree_that_was_never_built_says_its_version_is_unknown(tmp_path: Path) -> None:
    exported = _copy_tree(tmp_path / "exported")
    assert not (exported / "shipit" / "_version.py").exists()
    version = _run(sys.executable, "-m", "shipit", "--version", cwd=exported, PYTHONPATH=exported)
    assert version == "shipit 0.0+unknown\n"


def test_an_archive_of_a_tagged_commit_knows_its_version(tmp_path: Path) -> None:
    """What GitHub downloads for `uses: OWNER/REPO@REF` and for a release tarball is
    `git archive` output, with no .git: .git_archival.txt (export-subst) carries the version."""
    tagged = _checkout_copy(tmp_path / "tagged", TAG)
    archive = subprocess.run(
        ["git", "-C", str(tagged), "archive", "--format=tar", "HEAD"],
        capture_output=True,
        check=True,
    ).stdout
    exported = tmp_path / "exported"
    exported.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(exported, filter="tar")
    assert not (exported / ".git").exists()
    (wheel,) = _build(exported, tmp_path / "dist", "--wheel")
    assert _wheel_metadata(wheel)["Version"] == VERSION
