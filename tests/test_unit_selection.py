"""`make test-unit` (`pytest -m "not engine"`) must leave out every test that needs a Docker
engine, the remote one included, so it passes on a machine without any."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _selected(marker: str, *paths: str) -> list[str]:
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only"]
    collected = subprocess.run(
        [*pytest, "-q", "-m", marker, *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert collected.returncode in (0, 5), collected.stdout + collected.stderr  # 5: none
    return [line for line in collected.stdout.splitlines() if "::" in line]


def test_the_remote_engine_tests_are_engine_tests() -> None:
    assert _selected("not engine", "tests/test_remote_engine.py") == []
    assert _selected("engine", "tests/test_remote_engine.py")


def test_a_push_through_the_remote_engine_is_an_engine_test() -> None:
    remote = "test_an_insecure_http_registry_in_the_netns_through_the_remote_engine"
    assert not [t for t in _selected("not engine", "tests/test_transport.py") if remote in t]
    assert [t for t in _selected("engine", "tests/test_transport.py") if remote in t]
