"""The shape of the registries that docs/ARCHITECTURE.md promises: a registry is told apart by
its name only in the catalogue, every login is one type with the one `auth_config()`, a
resolved target is a frozen value, and config.py stays small now that [[registries]] is read
elsewhere. Each check is shown to fail on code that breaks it."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shipit.registries.registry import RegistrySpec, Request, Target

PACKAGE = Path(__file__).resolve().parent.parent / "shipit"
CATALOGUE = "shipit/registries/catalog.py"
# The names of shipit's own registries (also the kind "ecr").
OWN_NAMES = frozenset({"ecr", "dockerhub"})


def _named(node: ast.AST) -> bool:
    """A literal naming one of shipit's own registries, alone or in a tuple, list or set."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.lower() in OWN_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_named(item) for item in node.elts)
    return False


def registries_chosen_by_name(source: str) -> list[int]:
    """The lines that compare something with "ecr" or "dockerhub" (==, !=, in, a match case)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
            _named(side) for side in (node.left, *node.comparators)
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _named(node.value):
            lines.append(node.value.lineno)
    return sorted(lines)


def _modules() -> dict[str, str]:
    return {
        path.relative_to(PACKAGE.parent).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_no_registry_is_chosen_by_its_name_outside_the_catalogue() -> None:
    modules = _modules()
    found = {
        path: lines
        for path, source in modules.items()
        if path != CATALOGUE and (lines := registries_chosen_by_name(source))
    }
    assert not found, f"registries told apart by name outside {CATALOGUE}: {found}"
    # The catalogue itself does choose: the scan sees it.
    assert registries_chosen_by_name(modules[CATALOGUE])


def test_the_name_finder_finds_names_compared() -> None:
    source = (
        'if target.name == "ecr":\n'
        "    pass\n"
        'hint = "a" if spec.name != "dockerhub" else "b"\n'
        'wanted = name in ("quay", "DockerHub")\n'
        "match spec.name:\n"
        '    case "ecr":\n'
        "        pass\n"
        'client = session.client("ecr")\n'
        'RESERVED = ("ecr", "dockerhub", "all")\n'
    )
    assert registries_chosen_by_name(source) == [1, 3, 4, 6]


def _aws_modules_after(imports: str) -> list[str]:
    code = (
        f"import sys, {imports}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in done.stdout.strip().strip("[]").split(", ") if name]


def test_the_registry_kinds_and_doctor_load_no_boto3() -> None:
    """ECR's registry is resolved from the token cache without botocore; it imports the boto3
    side (registries/ecr.py) only on a miss."""
    kinds = "shipit.registries.catalog, shipit.registries.ecr_registry, shipit.doctor"
    assert _aws_modules_after(kinds) == []
    assert _aws_modules_after("shipit.registries.ecr")  # the check above can fail


def _auth_config_definitions(source: str) -> int:
    return sum(
        isinstance(node, ast.FunctionDef) and node.name == "auth_config"
        for node in ast.walk(ast.parse(source))
    )


def test_every_login_is_one_type_with_the_one_auth_config() -> None:
    counts = {
        path: count
        for path, source in _modules().items()
        if (count := _auth_config_definitions(source))
    }
    assert counts == {"shipit/registries/credentials.py": 1}
    twice = "class A:\n    def auth_config(self): ...\nclass B:\n    def auth_config(self): ...\n"
    assert _auth_config_definitions(twice) == 2  # the count above can fail


def _stored_functions(kind: type) -> list[str]:
    return [field.name for field in dataclasses.fields(kind) if "Callable" in str(field.type)]


@dataclasses.dataclass(frozen=True)
class _WithAClosure:
    name: str
    refresh: Callable[[], str] | None = None


def test_a_target_is_a_frozen_value_without_stored_functions() -> None:
    for kind in (Target, RegistrySpec, Request):
        assert kind.__dataclass_params__.frozen, kind  # type: ignore[attr-defined]
        assert not _stored_functions(kind), kind
    assert _stored_functions(_WithAClosure) == ["refresh"]  # the check above can fail


CONFIG_LINES_LIMIT = 600


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_config_stays_under_its_size_limit(tmp_path: Path) -> None:
    lines = _line_count(PACKAGE / "config.py")
    assert lines < CONFIG_LINES_LIMIT, f"shipit/config.py has {lines} lines"
    too_long = tmp_path / "too_long.py"
    too_long.write_text("x = 1\n" * CONFIG_LINES_LIMIT, encoding="utf-8")
    assert _line_count(too_long) >= CONFIG_LINES_LIMIT  # the check above can fail
