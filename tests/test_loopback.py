"""The one loopback rule, for registries, engines and the site's address."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shipit.engine_location import EngineAddress
from shipit.loopback import is_loopback
from tests.code_scan import modules_matching

SHIPIT = Path(__file__).resolve().parent.parent / "shipit"


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "LOCALHOST",
        "registry.localhost",
        "localhost.",
        "127.0.0.1",
        "127.10.0.2",
        "::1",
        "[::1]",
    ],
)
def test_loopback_names_and_addresses(name: str) -> None:
    assert is_loopback(name)


@pytest.mark.parametrize(
    "name",
    [
        "10.251.0.2",
        "0.0.0.0",
        "::",
        "registry.example",
        "localhost.example",
        "128.0.0.1",
        "notlocalhost",
        "",
    ],
)
def test_other_names_and_addresses(name: str) -> None:
    assert not is_loopback(name)


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("tcp://127.0.0.2:2375", False),
        ("tcp://localhost:2375", False),
        ("tcp://[::1]:2375", False),
        ("tcp://10.251.0.2:2375", True),
        ("ssh://me@builder", True),
        ("unix:///var/run/docker.sock", False),
    ],
)
def test_an_engine_on_loopback_publishes_on_this_machine(url: str, remote: bool) -> None:
    assert EngineAddress(url, "DOCKER_HOST").is_remote is remote


LOOPBACK_TESTS = re.compile(r"\.is_loopback\b|startswith\(\"127\.|\"127\.0\.0\.1\", \"::1\"")


def test_no_module_but_loopback_decides_what_loopback_is(tmp_path: Path) -> None:
    assert modules_matching(SHIPIT, LOOPBACK_TESTS, home="loopback.py") == []
    # The check can fail: a module with its own rule is named.
    package = tmp_path / "shipit"
    package.mkdir()
    (package / "own.py").write_text('def local(host):\n    return host.startswith("127.")\n')
    assert modules_matching(package, LOOPBACK_TESTS, home="loopback.py") == ["shipit/own.py"]
