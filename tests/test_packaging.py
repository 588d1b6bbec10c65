"""What a user's `pip install shipit-site` brings must be enough to run it: every module shipit
imports at run time is the standard library, shipit itself, or a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "shipit"
# The installed distribution that holds the shipit package (under its old name, shipit, in an
# environment installed before the rename).
_NAMES = importlib.metadata.packages_distributions()["shipit"]
DISTRIBUTION = "shipit-site" if "shipit-site" in _NAMES else _NAMES[0]


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Top-level module names imported outside `if TYPE_CHECKING:` blocks."""
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    names = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _declared_distributions() -> set[str]:
    requirements = importlib.metadata.requires(DISTRIBUTION) or []
    runtime = [r for r in requirements if "extra ==" not in r]
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in runtime}


def test_every_runtime_import_is_declared() -> None:
    declared = _declared_distributions()
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for source in PACKAGE.rglob("*.py"):
        for module in _runtime_imports(ast.parse(source.read_text(), str(source))):
            if module in sys.stdlib_module_names or module in ("shipit", "__future__"):
                continue
            distributions = {d.lower() for d in providers.get(module, [module])}
            if not distributions & declared:
                undeclared[module] = str(source.relative_to(PACKAGE.parent))
    assert undeclared == {}, f"imported but not in [project] dependencies: {undeclared}"


def test_the_check_sees_an_undeclared_import() -> None:
    tree = ast.parse("import click\nif TYPE_CHECKING:\n    import mypy_boto3_ecr\n")
    assert _runtime_imports(tree) == {"click"}
    assert "click" not in _declared_distributions()


def _render_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = ["shipit", "render", "-C", str(PACKAGE.parent), "--out", str(tmp_path / "context")]
    probe = (
        f"import sys; sys.argv = {argv!r}; import shipit.entry as e; code = e.main(); "
        "print(code, [m for m in ('docker', 'boto3', 'botocore') if m in sys.modules])"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHIPIT_")}
    return subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )


def test_render_of_a_chosen_base_image_needs_neither_docker_nor_boto3(tmp_path: Path) -> None:
    """`shipit render` is documented as working without Docker, and starts faster for it."""
    completed = _render_probe(tmp_path, SHIPIT_BASE_IMAGE="nginx:1.27.3-bookworm")
    assert completed.stdout.splitlines()[-1] == "0 []", completed.stderr
    assert (tmp_path / "context" / "Dockerfile").is_file()


def test_render_of_the_default_base_without_an_engine_renders_for_the_default(
    tmp_path: Path,
) -> None:
    """The default base image may fall back to the local one, as the build decides; with no
    engine to ask, render says so and renders for the default."""
    completed = _render_probe(tmp_path, DOCKER_HOST="tcp://127.0.0.1:9")
    assert completed.stdout.splitlines()[-1].startswith("0 "), completed.stderr
    assert "rendering for nginx:1.27.3-bookworm" in completed.stderr
    dockerfile = (tmp_path / "context" / "Dockerfile").read_text()
    assert "FROM nginx:1.27.3-bookworm" in dockerfile


def test_the_metadata_carries_the_license_and_classifiers() -> None:
    meta = importlib.metadata.metadata(DISTRIBUTION)
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    license_text = (PACKAGE.parent / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it
