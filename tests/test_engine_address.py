"""Where the engine is, resolved from the environment as the docker CLI does (pure logic)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shipit.engine import EngineAddress
from shipit.errors import EngineError


@pytest.mark.parametrize(
    ("url", "host", "remote"),
    [
        ("unix:///var/run/docker.sock", "", False),
        ("npipe:////./pipe/docker_engine", "", False),
        ("tcp://10.251.0.2:2376", "10.251.0.2", True),
        ("tcp://docker:2375", "docker", True),
        ("tcp://127.0.0.1:2375", "127.0.0.1", False),
        ("tcp://localhost:2375", "localhost", False),
        ("tcp://[2001:db8::5]:2376", "2001:db8::5", True),
        ("ssh://me@builder", "builder", True),
        ("ssh://me@builder:2222", "builder", True),
        ("ssh://builder.example.org", "builder.example.org", True),
    ],
)
def test_host_of_an_engine_address(url: str, host: str, remote: bool) -> None:
    address = EngineAddress(url, "DOCKER_HOST")
    assert address.host == host
    assert address.is_remote is remote


def test_docker_host_with_tls_defaults_the_cert_path_to_dot_docker() -> None:
    address = EngineAddress.resolve(
        {"DOCKER_HOST": "tcp://builder:2376", "DOCKER_TLS_VERIFY": "1", "HOME": "/nowhere"}
    )
    assert address.tls
    assert address.cert_path.endswith("/.docker")
    assert address.describe() == "DOCKER_HOST=tcp://builder:2376 (TLS)"


def test_empty_tls_verify_means_no_tls() -> None:
    address = EngineAddress.resolve({"DOCKER_HOST": "tcp://builder:2375", "DOCKER_TLS_VERIFY": ""})
    assert not address.tls
    assert address.describe() == "DOCKER_HOST=tcp://builder:2375"


def test_current_docker_context_is_used_without_docker_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "docker"
    # The docker CLI's layout: a context's metadata is filed under the sha256 of its name.
    meta = config / "contexts" / "meta" / hashlib.sha256(b"builder").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {
                "Name": "builder",
                "Metadata": {},
                "Endpoints": {"docker": {"Host": "ssh://me@builder", "SkipTLSVerify": False}},
            }
        )
    )
    (config / "config.json").write_text(json.dumps({"currentContext": "builder"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    address = EngineAddress.resolve({})
    assert address.url == "ssh://me@builder"
    assert address.source == "docker context builder"
    assert address.describe() == "ssh://me@builder (docker context builder)"
    assert address.host == "builder"


def test_an_unknown_context_is_an_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(EngineError, match="the docker context 'gone' does not exist"):
        EngineAddress.resolve({"DOCKER_CONTEXT": "gone"})


def test_no_host_and_no_context_is_the_local_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    address = EngineAddress.resolve({})
    assert address.url == "unix:///var/run/docker.sock"
    assert not address.is_remote


def test_importing_the_engine_module_does_not_load_paramiko() -> None:
    """docker-py imports paramiko for ssh:// (about 0.25 s of every command's start-up);
    shipit's ssh:// goes through the OpenSSH client and never needs it."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shipit.engine, docker.transport; "
            "print(sorted(m for m in sys.modules if m.startswith('paramiko.')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
