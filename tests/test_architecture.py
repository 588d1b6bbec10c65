"""The shape of the code that docs/ARCHITECTURE.md promises: no import cycles inside shipit/
(lazy imports inside functions included), docker-py imported by the engine modules only, and
boto3 loaded by the push only when the ECR token cache misses."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.code_scan import modules_matching

PACKAGE = Path(__file__).resolve().parent.parent / "shipit"


def _imports() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                wanted = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {target for target in wanted if target in modules and target != name}
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _imports()
    assert "shipit.push.publish" in graph  # the scan sees the packages
    cycles = [cycle for name in sorted(graph) if (cycle := _cycle_from(graph, name))]
    assert not cycles, " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
    assert _cycle_from({"a": {"b"}, "b": set()}, "a") is None


def _importers_of(*packages: str) -> set[str]:
    """The files of shipit/ that import any of `packages` (or a module of theirs), lazy
    imports and imports only for type checking included."""
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] in packages for name in names):
                importers.add(path.relative_to(PACKAGE.parent).as_posix())
    return importers


def test_only_the_engine_modules_import_docker() -> None:
    # The adapter, and where the engine is and why it cannot be reached (docker contexts,
    # docker-py's TLS error), which it asks.
    assert _importers_of("docker") == {
        "shipit/engine.py",
        "shipit/engine_location.py",
        "shipit/engine_diagnosis.py",
    }


def test_the_push_and_the_token_cache_load_no_boto3() -> None:
    """A cache hit must not pay for botocore: only aws.py loads it, through registries/ecr.py
    (imported by the push on a miss) and iam/identity.py, and the push modules import none of
    them at load time."""
    code = (
        "import sys, shipit.cli, shipit.pipeline, shipit.push, shipit.push.targets, "
        "shipit.registries.ecr_cache\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    positive = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shipit.registries.ecr; print('botocore' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert positive.stdout.strip() == "True"  # the check above can fail


# The AWS adapter, and at most one more module for a service's own calls.
BOTO_IMPORTERS_ALLOWED = {"shipit/aws.py", "shipit/registries/ecr.py"}


def test_boto3_and_botocore_are_imported_by_the_aws_adapter_only() -> None:
    importers = _importers_of("boto3", "botocore")
    assert "shipit/aws.py" in importers  # the scan sees boto3 imports where they are
    assert importers <= BOTO_IMPORTERS_ALLOWED, sorted(importers - BOTO_IMPORTERS_ALLOWED)


def _imports_between(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    """Every "a -> b" where a module of package `source` imports one of package `target`."""
    return sorted(
        f"{name} -> {imported}"
        for name, imported_names in graph.items()
        if name.startswith(f"{source}.")
        for imported in imported_names
        if imported == target or imported.startswith(f"{target}.")
    )


def test_registries_and_iam_do_not_import_each_other() -> None:
    """What both need of AWS (the session, the caller, the errors) is in aws.py, beside them."""
    graph = _imports()
    assert _imports_between(graph, "shipit.push", "shipit.iam")  # the check finds an import
    assert _imports_between(graph, "shipit.registries", "shipit.iam") == []
    assert _imports_between(graph, "shipit.iam", "shipit.registries") == []


MAX_MODULE_LINES = 600


def _oversized(package: Path, limit: int) -> dict[str, int]:
    """Every module of `package` longer than `limit` lines, with its length."""
    lengths = {
        path.relative_to(package.parent).as_posix(): len(
            path.read_text(encoding="utf-8").splitlines()
        )
        for path in package.rglob("*.py")
    }
    return {name: lines for name, lines in sorted(lengths.items()) if lines > limit}


def test_no_module_is_over_600_lines() -> None:
    """A module that long holds several concerns: split it by concern, as engine.py,
    pipeline.py and cli.py were."""
    oversized = _oversized(PACKAGE, MAX_MODULE_LINES)
    assert not oversized, f"over {MAX_MODULE_LINES} lines: {oversized}"


def test_the_size_check_finds_a_long_module(tmp_path: Path) -> None:
    package = tmp_path / "shipit"
    (package / "sub").mkdir(parents=True)
    (package / "short.py").write_text("x = 1\n" * MAX_MODULE_LINES, encoding="utf-8")
    (package / "sub" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    assert _oversized(package, MAX_MODULE_LINES) == {"shipit/sub/long.py": MAX_MODULE_LINES + 1}


# A digest spelled out by hand, or a short id sliced from one, outside digests.py.
HAND_MADE_DIGESTS = re.compile(
    r"""["']sha256:["'] \+ hashlib|\[7:19\]|removeprefix\(["']sha256:["']\)\[:12\]"""
)


def test_digests_and_short_ids_come_from_digests_py(tmp_path: Path) -> None:
    assert modules_matching(PACKAGE, HAND_MADE_DIGESTS, home="digests.py") == []
    package = tmp_path / "shipit"
    package.mkdir()
    (package / "own.py").write_text("def short(image_id):\n    return image_id[7:19]\n")
    assert modules_matching(package, HAND_MADE_DIGESTS, home="digests.py") == ["shipit/own.py"]
