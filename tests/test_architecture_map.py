"""docs/ARCHITECTURE.md names only what exists: every file and folder it names, every
`module.name` (and `module.Class.method`) it points at, and every other code name it quotes.
A map that names a module or a function that was renamed sends the next engineer nowhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "shipit"
QUOTED = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"^[\w./-]+(\.py|/)$")
DOTTED = re.compile(r"^([\w/]+)\.([A-Za-z_][\w.]*?)(\(\))?$")
# A quoted code name: CamelCase, or snake_case with an underscore (plain words such as
# `latest` or `run` are commands, tags and outputs, not names in the code).
CODE_NAME = re.compile(
    r"^(?:[A-Z][a-z0-9]+(?:[A-Z]\w*)?|[a-z]+_[a-z0-9_]+|[A-Z][A-Z0-9_]+)(\(\))?$"
)


def _defined(tree: ast.Module, chain: list[str]) -> bool:
    """Whether `chain` (Name, or Class.method...) is defined at the top of `tree`."""
    scope: list[ast.stmt] = tree.body
    for name in chain:
        found: ast.stmt | None = None
        for node in scope:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name == name:
                    found = node
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found = node
        if found is None:
            return False
        scope = found.body if isinstance(found, ast.ClassDef) else []
    return True


def stale_names(document: str, repo: Path) -> list[str]:
    package = repo / "shipit"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py"))
    stale = []
    for quoted in sorted(set(QUOTED.findall(document))):
        if PATH.match(quoted):
            if not any((base / quoted).exists() for base in (package, repo)):
                stale.append(quoted)
            continue
        dotted = DOTTED.match(quoted)
        if dotted and (package / f"{dotted[1]}.py").is_file():
            tree = ast.parse((package / f"{dotted[1]}.py").read_text(encoding="utf-8"))
            if not _defined(tree, dotted[2].split(".")):
                stale.append(quoted)
            continue
        name = quoted.removesuffix("()")
        if "." in name and CODE_NAME.match(name.split(".")[0]):
            # Class.member: the class must exist somewhere, and the member inside it.
            owner, member = name.split(".", 1)
            trees = [ast.parse(p.read_text(encoding="utf-8")) for p in package.rglob("*.py")]
            if not any(_defined(tree, [owner, *member.split(".")]) for tree in trees):
                stale.append(quoted)
        elif CODE_NAME.match(quoted) and not re.search(rf"\b{re.escape(name)}\b", sources):
            stale.append(quoted)
    return stale


def test_every_name_in_the_architecture_map_exists() -> None:
    document = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert stale_names(document, REPO) == []


def test_a_renamed_module_function_or_method_is_found(tmp_path: Path) -> None:
    package = tmp_path / "shipit"
    (package / "push").mkdir(parents=True)
    (package / "push" / "steps.py").write_text(
        "class Step:\n    def point(self): ...\n\ndef point_tag_once(): ...\nLIMIT = 3\n"
    )
    document = (
        "`push/steps.py` `push/gone.py` `push/` `steps_gone/` `push/steps.point_tag_once` "
        "`push/steps.push_sha_once` `push/steps.Step.point` `push/steps.Step.gone` "
        "`Step.point` `Step.missing` `LIMIT` `parse_destinations` `point_tag_once()` `latest`"
    )
    assert stale_names(document, tmp_path) == [
        "Step.missing",
        "parse_destinations",
        "push/gone.py",
        "push/steps.Step.gone",
        "push/steps.push_sha_once",
        "steps_gone/",
    ]
