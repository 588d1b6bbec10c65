"""shipit against a remote engine (scripts/engines.sh): run, smoke, stop and ship over tcp://,
with and without TLS, through a docker context, and every way the connection can be wrong.

The engine publishes on its own machine (10.251.0.2), so these tests also prove that
readiness and smoke go there, and that the port check asks the engine, not this machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import remote
from harness.remote import (
    REMOTE_CERTS,
    REMOTE_IP,
    RemoteLoopback,
    plain_env,
    ssh_env,
    tls_env,
)
from harness.services import free_port, wait_until
from shipit.errors import ExitCode
from tests.conftest import REPO, Project, PublishProject, Result


@pytest.fixture(scope="module", autouse=True)
def remote_engine(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fails (never skips) when the remote engine is not up."""
    for env in (plain_env(), tls_env(), ssh_env(tmp_path_factory.mktemp("ssh-bin"))):
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env={**_without_engine_variables(), **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"no remote engine at {env['DOCKER_HOST']}: {remote.START_HINT}", pytrace=False
            )


@pytest.fixture
def remote_project(project: Project) -> Iterator[Project]:
    yield project
    remote.remove_leftovers(project.image)


def _without_engine_variables() -> dict[str, str]:
    import os

    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")
    }


def at(project: Project, engine_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in project.env(**extra).items()
        if key not in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")
    }
    env.update(engine_env)
    return env


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    assert lines[-1].startswith("shipit: error: "), result.output
    return lines[-1]


def status_of(url: str) -> int:
    return requests.get(url, timeout=5).status_code


@pytest.mark.parametrize("kind", ["tcp", "tls", "ssh"])
def test_run_smoke_stop_on_a_remote_engine(
    remote_project: Project, kind: str, tmp_path: Path
) -> None:
    project = remote_project
    engine_env = {"tcp": plain_env(), "tls": tls_env()}.get(kind) or ssh_env(tmp_path / "bin")
    env = at(project, engine_env)
    port = free_port()
    ran = project.shipit("run", "--port", str(port), "--json", env=env)
    assert ran.code == 0, ran.output
    document = json.loads(ran.stdout)
    url = f"http://{REMOTE_IP}:{port}"
    assert document["url"] == url
    assert document["smoke"]["ok"] is True
    assert "publishing on 0.0.0.0" in ran.stderr
    # Served by the engine's machine, not this one.
    assert status_of(url + "/healthz") == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)

    smoked = project.shipit("smoke", "--json", env=env)
    assert smoked.code == 0, smoked.output
    assert json.loads(smoked.stdout)["url"] == url

    stopped = project.shipit("stop", env=env)
    assert stopped.code == 0, stopped.output
    assert remote.containers_of(project.image) == []
    wait_until(lambda: _refused(url), timeout=10, what=f"{url} to stop answering")


def _refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False


def test_reach_host_is_where_readiness_and_smoke_go(remote_project: Project) -> None:
    project = remote_project
    port = free_port()
    # A NAT that is not there: readiness must go to the given address, and fail there.
    wrong = project.shipit(
        "run",
        "--port",
        str(port),
        "--reach-host",
        "127.0.0.1",
        "--ready-timeout",
        "3",
        env=at(project, plain_env()),
    )
    assert wrong.code == ExitCode.RUN, wrong.output
    assert f"did not answer http://127.0.0.1:{port}/healthz within 3 s" in one_error_line(wrong)
    assert remote.containers_of(project.image) == []

    right = project.shipit(
        "run",
        "--port",
        str(port),
        "--json",
        env=at(project, plain_env(), SHIPIT_REACH_HOST=REMOTE_IP, SHIPIT_HOST=REMOTE_IP),
    )
    assert right.code == 0, right.output
    assert json.loads(right.stdout)["url"] == f"http://{REMOTE_IP}:{port}"
    # --host chose the address: no warning about publishing on all of them.
    assert "publishing on 0.0.0.0" not in right.stderr


def test_publishing_on_the_remote_loopback_is_refused_unless_reached_through_a_tunnel(
    remote_project: Project,
) -> None:
    project = remote_project
    result = project.shipit(
        "run", "--host", "127.0.0.1", "--port", str(free_port()), env=at(project, plain_env())
    )
    assert result.code == ExitCode.RUN, result.output
    line = one_error_line(result)
    assert f"--host 127.0.0.1 is the loopback of the engine's machine ({REMOTE_IP})" in line
    assert "--reach-host" in line
    assert remote.containers_of(project.image) == []


def test_a_port_busy_on_the_engines_machine_is_found_there(remote_project: Project) -> None:
    project = remote_project
    port = free_port()  # free here: only the engine's machine has it in use
    holder = f"shipit-test-holder-{port}"
    remote.docker(
        plain_env(),
        "run",
        "-d",
        "--name",
        holder,
        "-p",
        f"{port}:80",
        "shipit-local/nginx:bookworm",
        "sleep",
        "300",
    )
    try:
        result = project.shipit("run", "--port", str(port), env=at(project, plain_env()))
        assert result.code == ExitCode.RUN, result.output
        line = one_error_line(result)
        assert f"port 0.0.0.0:{port} is already in use (by container {holder})" in line
        assert remote.containers_of(project.image) == []
    finally:
        remote.docker(plain_env(), "rm", "-f", holder, check=False)


def test_a_docker_context_names_the_engine(remote_project: Project, tmp_path: Path) -> None:
    """`docker context use` with no DOCKER_HOST: shipit talks to what the context names."""
    project = remote_project
    config = tmp_path / "docker-config"
    base = {**_without_engine_variables(), "DOCKER_CONFIG": str(config)}
    for name, endpoint in (
        ("remote-plain", f"host={remote.PLAIN}"),
        (
            "remote-tls",
            f"host={remote.TLS},ca={REMOTE_CERTS / 'ca.pem'},cert={REMOTE_CERTS / 'cert.pem'},"
            f"key={REMOTE_CERTS / 'key.pem'}",
        ),
    ):
        subprocess.run(
            ["docker", "context", "create", name, "--docker", endpoint],
            env=base,
            capture_output=True,
            check=True,
        )
    subprocess.run(
        ["docker", "context", "use", "remote-tls"], env=base, capture_output=True, check=True
    )
    env = {**project.env(), **base}
    for variable in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        env.pop(variable, None)
    doctor = project.shipit("doctor", "--to", "ecr", "--json", env=env)
    # The report, then (no AWS here) the error document.
    report, _ = json.JSONDecoder().raw_decode(doctor.stdout.lstrip())
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["engine"]["outcome"] == "ok", doctor.output
    assert f"{remote.TLS} (TLS) (docker context remote-tls)" in checks["engine"]["detail"]
    assert "image store: classic" in checks["engine"]["detail"]
    assert f"reached at http://{REMOTE_IP}:8080" in checks["published_ports"]["detail"]
    assert checks["push_uploads"]["detail"].startswith("the engine pushes: a remote engine")

    port = free_port()
    ran = project.shipit(
        "run", "--port", str(port), "--json", env={**env, "DOCKER_CONTEXT": "remote-plain"}
    )
    assert ran.code == 0, ran.output
    assert json.loads(ran.stdout)["url"] == f"http://{REMOTE_IP}:{port}"


def _other_ca(tmp_path: Path) -> Path:
    """Certificates from a CA the remote engine has never seen."""
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_test_certs.py"), str(tmp_path), REMOTE_IP],
        check=True,
        capture_output=True,
    )
    return tmp_path / "client"


def _cert_dir(tmp_path: Path, name: str, **files: Path | bytes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file_name, source in files.items():
        target = folder / f"{file_name}.pem"
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copy(source, target)
    return folder


def _stranger_ssh_config(tmp_path: Path) -> Path:
    """The remote's ssh settings, with a key that machine has never seen."""
    key = tmp_path / "stranger_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    ours = (remote.REMOTE_SSH / "ssh_config").read_text()
    config = tmp_path / "stranger_ssh_config"
    config.write_text(ours.replace(str(remote.REMOTE_SSH / "client_key"), str(key)))
    return config


def bad_connections(tmp_path: Path) -> list[tuple[str, dict[str, str], str]]:
    other = _other_ca(tmp_path / "other")
    ours = {name: REMOTE_CERTS / f"{name}.pem" for name in ("ca", "cert", "key")}
    return [
        ("plain HTTP to the TLS port", {"DOCKER_HOST": remote.TLS}, "wants TLS"),
        (
            "TLS to the plain port",
            tls_env() | {"DOCKER_HOST": remote.PLAIN},
            "does not speak TLS there",
        ),
        (
            "an engine certificate from another CA",
            tls_env(
                _cert_dir(
                    tmp_path, "wrong-ca", ca=other / "ca.pem", cert=ours["cert"], key=ours["key"]
                )
            ),
            "certificate is not signed by",
        ),
        (
            "a client certificate the engine does not trust",
            tls_env(
                _cert_dir(
                    tmp_path,
                    "wrong-client",
                    ca=ours["ca"],
                    cert=other / "cert.pem",
                    key=other / "key.pem",
                )
            ),
            "refused the client certificate",
        ),
        (
            "DOCKER_CERT_PATH that does not exist",
            tls_env(tmp_path / "nowhere"),
            f"DOCKER_CERT_PATH={tmp_path / 'nowhere'} is not a folder",
        ),
        (
            "DOCKER_CERT_PATH without key.pem",
            tls_env(_cert_dir(tmp_path, "no-key", ca=ours["ca"], cert=ours["cert"])),
            "has no key.pem",
        ),
        (
            "a cert.pem that is not PEM",
            tls_env(
                _cert_dir(
                    tmp_path, "not-pem", ca=ours["ca"], cert=b"not a certificate\n", key=ours["key"]
                )
            ),
            "cert.pem is not a PEM file",
        ),
        (
            "nothing listening on the engine's host",
            {"DOCKER_HOST": f"tcp://{REMOTE_IP}:2399"},
            "connection refused",
        ),
        (
            "an ssh engine whose ssh port refuses",
            {"DOCKER_HOST": f"ssh://shipit@{REMOTE_IP}:2399"},
            "cannot reach the engine over ssh",
        ),
        (
            "an ssh key the engine's machine does not accept",
            ssh_env(tmp_path / "stranger-bin", _stranger_ssh_config(tmp_path)),
            "cannot reach the engine over ssh",
        ),
        (
            "no ssh client on PATH",
            {"DOCKER_HOST": remote.SSH, "PATH": str(tmp_path / "empty-bin")},
            "needs the OpenSSH client (`ssh`) on PATH",
        ),
        (
            "a docker context that does not exist",
            {"DOCKER_CONTEXT": "no-such-context"},
            "docker context 'no-such-context' does not exist",
        ),
    ]


def test_every_wrong_connection_names_its_cause(remote_project: Project, tmp_path: Path) -> None:
    """One line each, exit 5, the cause named (not "no engine"), nothing left behind."""
    project = remote_project
    failures = []
    for case, engine_env, expected in bad_connections(tmp_path):
        result = project.shipit(
            "run", "--port", str(free_port()), env=at(project, engine_env), timeout=60
        )
        line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        if (
            result.code != ExitCode.ENGINE
            or expected not in line
            or not line.startswith("shipit: error: ")
            or "no Docker engine answers" in line
        ):
            failures.append(f"{case}: exit {result.code}, {line!r}")
    assert failures == []
    assert remote.containers_of(project.image) == []
    assert not (project.root / ".shipit").exists()


def test_ship_through_a_remote_engine(publish_project: PublishProject) -> None:
    """build -> run -> smoke -> push -> stop with the engine elsewhere: it pushes to the
    registries over its own network (here: its loopback, forwarded to this machine's)."""
    project = publish_project
    assert project.ecr and project.hub
    try:
        with RemoteLoopback(project.ecr.port), RemoteLoopback(project.hub.port):
            result = project.shipit("ship", "--json", env=at(project, plain_env()))
        assert result.code == 0, result.output
        document = json.loads(result.stdout)
        assert document["run"]["url"].startswith(f"http://{REMOTE_IP}:")
        pushed = {entry["registry"]: entry for entry in document["push"]["registries"]}
        assert pushed["ecr"]["status"] == pushed["dockerhub"]["status"] == "pushed"
        assert pushed["ecr"]["digest"] == pushed["dockerhub"]["digest"]
        assert remote.containers_of(project.image) == []
    finally:
        remote.remove_leftovers(project.image)
