"""shipit's registry client speaks to a registry as the Docker engine does
(shipit/registries/transport.py): HTTPS verified with the CAs and client certificates of
certs.d, HTTPS unverified or plain HTTP only for the registries the engine treats as
insecure, proxies from the environment but never for loopback, and a TLS mismatch in one line.

The pure rules first, then real Distribution registries with TLS (a private CA from
harness/certs.py), on loopback and on the project's netns address 10.251.0.1, pushed to by
shipit's own upload and by the engine (the local classic one and the remote one).

On the engines here (Docker 20.10 and 26) RegistryConfig lists 127.0.0.0/8 as insecure but not
::1, so a registry on [::1] is one the engine verifies: the tests of certs.d use it.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import remote
from harness.certs import CertificateSet, make_certs
from harness.registry_reader import RegistryReader
from harness.services import RegistryService
from shipit.engine import Engine
from shipit.errors import ConfigError, ExitCode, ShipitError
from shipit.registries.transport import (
    ENGINE_CERTS_DIR,
    RegistryRules,
    certs_folders,
    find_certificates,
    rules_for,
    transport_for,
)
from tests.conftest import HUB_USER, Project, Result
from tests.test_publish import registries, report_of

NETNS_CIDR = "10.251.0.0/30"
LOCAL_NETNS_IP = remote.LOCAL_IP  # this side of the veth to the remote engine
TOKEN = "dckr_pat_transport-tests-0123456789"

# What `docker info` says on an engine started without insecure-registries (20.10 and 26).
ENGINE_DEFAULT = {
    "InsecureRegistryCIDRs": ["127.0.0.0/8"],
    "IndexConfigs": {"docker.io": {"Name": "docker.io", "Secure": True, "Official": True}},
}
WITH_NETNS = {**ENGINE_DEFAULT, "InsecureRegistryCIDRs": [NETNS_CIDR, "127.0.0.0/8"]}


def rules(config: dict[str, object]) -> RegistryRules:
    return RegistryRules.from_registry_config(config, "the test engine")


def no_lookup(name: str) -> list[str]:
    return []


# ---------------------------------------------------------------------------------------
# The engine's rules (pure)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "host", "secure"),
    [
        (ENGINE_DEFAULT, "127.0.0.1:5000", False),
        (ENGINE_DEFAULT, "127.8.9.10", False),
        (ENGINE_DEFAULT, "[::1]:5000", True),
        (ENGINE_DEFAULT, f"{LOCAL_NETNS_IP}:5000", True),
        (WITH_NETNS, f"{LOCAL_NETNS_IP}:5000", False),
        (WITH_NETNS, "10.251.0.2:5000", False),
        (WITH_NETNS, "10.251.0.4:5000", True),  # outside the /30
        ({**ENGINE_DEFAULT, "InsecureRegistryCIDRs": ["::1/128"]}, "[::1]:5000", False),
        # An insecure-registries entry that is no CIDR becomes an IndexConfigs entry.
        (
            {**ENGINE_DEFAULT, "IndexConfigs": {"registry.corp:5000": {"Secure": False}}},
            "registry.corp:5000",
            False,
        ),
        (
            {**ENGINE_DEFAULT, "IndexConfigs": {"registry.corp:5000": {"Secure": False}}},
            "registry.corp:5001",
            True,
        ),
        (ENGINE_DEFAULT, "registry.shipit-test.invalid:5000", True),  # unresolvable: secure
        (ENGINE_DEFAULT, "docker.io", True),
    ],
)
def test_which_registries_the_engine_treats_as_insecure(
    config: dict[str, object], host: str, secure: bool
) -> None:
    assert rules(config).is_secure(host, no_lookup) is secure


def test_names_are_resolved_to_their_addresses_as_the_engine_does() -> None:
    addresses = {"localhost": ["127.0.0.1", "::1"], "registry.lab": ["10.251.0.1"]}

    def lookup(name: str) -> list[str]:
        return addresses.get(name, [])

    assert not rules(ENGINE_DEFAULT).is_secure("localhost:5000", lookup)
    assert rules(ENGINE_DEFAULT).is_secure("registry.lab:5000", lookup)
    assert not rules(WITH_NETNS).is_secure("registry.lab:5000", lookup)


def test_without_an_engine_the_rules_are_dockers_defaults() -> None:
    assert RegistryRules.defaults().is_secure("[::1]:5000", no_lookup)
    assert not RegistryRules.defaults().is_secure("127.0.0.1:5000", no_lookup)
    assert rules({"InsecureRegistryCIDRs": ["not a cidr", NETNS_CIDR]}).insecure_networks
    assert RegistryRules.from_registry_config(None, "x") == RegistryRules.defaults()


def test_the_engine_is_asked_only_when_its_rules_can_matter() -> None:
    # Every engine treats 127.0.0.0/8 as insecure and its settings only add insecure hosts:
    # a loopback registry needs no `docker info`.
    asked: list[str] = []

    def engine_rules() -> RegistryRules:
        asked.append("docker info")
        return rules(WITH_NETNS)

    assert rules_for("127.0.0.1:5000", engine_rules) == RegistryRules.defaults()
    assert rules_for("localhost:5000", engine_rules) == RegistryRules.defaults()
    assert asked == []
    assert rules_for(f"{LOCAL_NETNS_IP}:5000", engine_rules) == rules(WITH_NETNS)
    assert rules_for("[::1]:5000", engine_rules) == rules(WITH_NETNS)
    assert len(asked) == 2


def test_the_schemes_the_engine_tries(tmp_path: Path) -> None:
    environ = {"DOCKER_CONFIG": str(tmp_path)}
    loopback = transport_for("127.0.0.1:5000", rules(ENGINE_DEFAULT), environ, no_lookup)
    assert loopback.schemes == ("https", "http")
    netns = transport_for(f"{LOCAL_NETNS_IP}:5000", rules(ENGINE_DEFAULT), environ, no_lookup)
    assert netns.schemes == ("https",)
    listed = transport_for(f"{LOCAL_NETNS_IP}:5000", rules(WITH_NETNS), environ, no_lookup)
    assert listed.schemes == ("https", "http")
    hub = transport_for("registry-1.docker.io", rules(ENGINE_DEFAULT), environ, no_lookup)
    assert hub.schemes == ("https",)


def test_tls_failures_are_explained_for_registries_the_engine_verifies(tmp_path: Path) -> None:
    environ = {"DOCKER_CONFIG": str(tmp_path)}
    not_tls = [ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")]
    secure = transport_for(f"{LOCAL_NETNS_IP}:5000", rules(ENGINE_DEFAULT), environ, no_lookup)
    failure = secure.tls_failure(not_tls)
    assert failure is not None
    assert failure.message == (
        f"registry {LOCAL_NETNS_IP}:5000 answers plain HTTP, and the test engine does not list "
        "it as an insecure registry"
    )
    assert secure.tls_failure([ConnectionRefusedError()]) is None
    # An insecure registry is not bound by these rules: the usual "TLS handshake failed".
    insecure = transport_for(f"{LOCAL_NETNS_IP}:5000", rules(WITH_NETNS), environ, no_lookup)
    assert insecure.tls_failure(not_tls) is None


# ---------------------------------------------------------------------------------------
# certs.d (pure, on temporary folders)
# ---------------------------------------------------------------------------------------


def test_certs_d_folders_are_the_engines_then_docker_configs(tmp_path: Path) -> None:
    host = "[::1]:5000"
    assert certs_folders(host, {"DOCKER_CONFIG": str(tmp_path)}) == (
        ENGINE_CERTS_DIR / host,
        tmp_path / "certs.d" / host,
    )
    assert certs_folders(host, {"HOME": str(tmp_path)})[1] == tmp_path / ".docker/certs.d" / host


def test_certs_d_every_crt_is_a_ca_and_a_cert_pairs_with_its_key(tmp_path: Path) -> None:
    engine_dir, user_dir = tmp_path / "etc", tmp_path / "user"
    for folder, names in (
        (engine_dir, ("ca.crt", "other-ca.crt", "client.cert", "client.key", "notes.txt")),
        (user_dir, ("mine.crt",)),
    ):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(name)
    found = find_certificates((engine_dir, user_dir, tmp_path / "missing"))
    assert found.ca_files == (
        engine_dir / "ca.crt",
        engine_dir / "other-ca.crt",
        user_dir / "mine.crt",
    )
    assert found.client_pairs == ((engine_dir / "client.cert", engine_dir / "client.key"),)
    assert find_certificates((tmp_path / "missing",)).ca_files == ()


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("client.cert",), "client.cert has no key client.key beside it"),
        (("client.key",), "client.key has no client certificate client.cert beside it"),
    ],
)
def test_certs_d_half_a_client_pair_is_an_error(
    tmp_path: Path, names: tuple[str, ...], message: str
) -> None:
    for name in names:
        (tmp_path / name).write_text("x")
    with pytest.raises(ConfigError) as caught:
        find_certificates((tmp_path,))
    assert message in caught.value.message
    assert caught.value.exit_code == ExitCode.CONFIG


def test_certs_d_is_not_read_for_an_insecure_registry(tmp_path: Path) -> None:
    # As the engine: no CA and no client certificate for a registry it does not verify.
    folder = tmp_path / "certs.d" / "127.0.0.1:5000"
    folder.mkdir(parents=True)
    (folder / "client.cert").write_text("half a pair, which a secure registry refuses")
    environ = {"DOCKER_CONFIG": str(tmp_path)}
    transport = transport_for("127.0.0.1:5000", rules(ENGINE_DEFAULT), environ, no_lookup)
    assert transport.certificates.ca_files == () and transport.certificates.client_pairs == ()
    with pytest.raises(ConfigError):
        transport_for("127.0.0.1:5000", rules({}), environ, no_lookup)


# ---------------------------------------------------------------------------------------
# Proxies (requests reads the environment; loopback goes direct)
# ---------------------------------------------------------------------------------------


def test_proxies_come_from_the_environment_but_loopback_goes_direct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = "http://proxy.shipit-test.invalid:3128"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    def proxies_for(host: str, url: str) -> dict[str, str]:
        client = RegistryReader(host, rules=rules(WITH_NETNS))
        assert client._session.trust_env
        settings = client._session.merge_environment_settings(url, {}, None, None, None)
        return dict(settings["proxies"])

    assert proxies_for("registry.example.com", "https://registry.example.com/v2/")["https"] == proxy
    assert proxies_for("10.0.0.7:5000", "http://10.0.0.7:5000/v2/")["http"] == proxy
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000"):
        assert proxies_for(host, f"https://{host}/v2/") == {}
    monkeypatch.setenv("NO_PROXY", "registry.example.com")
    assert "https" not in proxies_for("registry.example.com", "https://registry.example.com/v2/")


# ---------------------------------------------------------------------------------------
# Real registries, shipit's client
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return make_certs(tmp_path_factory.mktemp("ca"), ["127.0.0.1", "::1", LOCAL_NETNS_IP])


@pytest.fixture
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $DOCKER_CONFIG, so the user's own certs.d plays no part."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


def put_ca(folder: Path, certs: CertificateSet, *, client: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(certs.server.ca, folder / "ca.crt")
    if client:
        shutil.copy(certs.client.cert, folder / "client.cert")
        shutil.copy(certs.client.key, folder / "client.key")


@contextmanager
def engine_certs_d(host: str, certs: CertificateSet) -> Iterator[Path]:
    """The CA in /etc/docker/certs.d/HOST/ca.crt, where the engine reads it, for the block."""
    created_parent = not ENGINE_CERTS_DIR.exists()
    folder = ENGINE_CERTS_DIR / host
    put_ca(folder, certs)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if created_parent and not any(ENGINE_CERTS_DIR.iterdir()):
            ENGINE_CERTS_DIR.rmdir()


def failure_of(client: RegistryReader) -> ShipitError:
    with pytest.raises(ShipitError) as caught:
        client.ping()
    return caught.value


def test_a_tls_registry_on_loopback_is_spoken_to_over_https_as_the_engine_does(
    certs: CertificateSet, user_config: Path
) -> None:
    # Loopback is insecure to the engine: HTTPS without verification when the registry
    # speaks TLS (shipit spoke plain HTTP to it and got "400 to GET ..."), else plain HTTP.
    with RegistryService(tls=certs) as tls, RegistryService() as plain:
        for registry, scheme in ((tls, "https"), (plain, "http")):
            client = RegistryReader(registry.host, registry.username, registry.password)
            client.ping()
            assert client.scheme == scheme


def test_a_registry_the_engine_verifies_needs_its_ca_in_certs_d(
    engine: Engine, certs: CertificateSet, user_config: Path
) -> None:
    engine_rules = engine.registry_rules()
    with RegistryService(tls=certs, address="::1") as registry:
        assert engine_rules.is_secure(registry.host), "the engine treats ::1 as insecure"
        error = failure_of(RegistryReader(registry.host, "u", "p", rules=engine_rules))
        assert error.exit_code == ExitCode.REGISTRY_UNREACHABLE
        assert error.message.startswith(
            f"the TLS certificate of registry {registry.host} is not signed by a CA that "
            "shipit or the engine trusts"
        )
        assert f"{ENGINE_CERTS_DIR}/{registry.host}/ca.crt" in error.hint
        assert "\n" not in error.one_line()

        put_ca(user_config / "certs.d" / registry.host, certs)
        client = RegistryReader(
            registry.host, registry.username, registry.password, rules=engine_rules
        )
        client.ping()
        assert client.scheme == "https"


def test_a_client_certificate_comes_from_certs_d(
    engine: Engine, certs: CertificateSet, user_config: Path
) -> None:
    engine_rules = engine.registry_rules()
    folder = user_config / "certs.d"
    with RegistryService(tls=certs, address="::1", require_client_cert=True) as registry:
        put_ca(folder / registry.host, certs)
        error = failure_of(RegistryReader(registry.host, "u", "p", rules=engine_rules))
        assert error.message == (
            f"registry {registry.host} wants a TLS client certificate and none is set up"
        )
        assert f"{folder / registry.host}/" in error.hint

        put_ca(folder / registry.host, certs, client=True)
        RegistryReader(
            registry.host, registry.username, registry.password, rules=engine_rules
        ).ping()


def test_a_certificate_for_another_address_is_said_in_one_line(
    engine: Engine, tmp_path: Path, user_config: Path
) -> None:
    only_v4 = make_certs(tmp_path / "v4", ["127.0.0.1"])
    with RegistryService(tls=only_v4, address="::1") as registry:
        put_ca(user_config / "certs.d" / registry.host, only_v4)
        error = failure_of(RegistryReader(registry.host, "u", "p", rules=engine.registry_rules()))
        assert error.message.startswith(
            f"the TLS certificate of registry {registry.host} is not valid for ::1 (IP address "
            "mismatch"
        )


def test_a_ca_file_that_is_no_certificate_is_a_configuration_error(user_config: Path) -> None:
    host = "[::1]:5000"
    folder = user_config / "certs.d" / host
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        RegistryReader(host, rules=rules(ENGINE_DEFAULT))
    assert caught.value.message.startswith(f"cannot use {folder / 'ca.crt'} as a CA certificate")


def test_plain_http_where_the_engine_wants_tls_is_said_in_one_line(
    engine: Engine, user_config: Path
) -> None:
    with RegistryService(address="::1") as registry:
        error = failure_of(RegistryReader(registry.host, "u", "p", rules=engine.registry_rules()))
        assert error.exit_code == ExitCode.REGISTRY_UNREACHABLE
        assert error.message.startswith(f"registry {registry.host} answers plain HTTP, and the ")
        assert error.hint.startswith(
            f'add "{registry.host}" to "insecure-registries" in /etc/docker/daemon.json'
        )


def test_the_engine_says_its_registry_rules_once_per_connection(engine: Engine) -> None:
    connected = Engine.connect()
    calls = []
    info = connected.api.info

    def counted() -> object:
        calls.append(1)
        return info()

    connected.api.info = counted  # type: ignore[method-assign]
    first = connected.registry_rules()
    assert connected.registry_rules() == first
    assert connected.image_store() in ("classic", "containerd")
    assert len(calls) == 1
    listed = subprocess.run(
        ["docker", "info", "--format", "{{json .RegistryConfig.InsecureRegistryCIDRs}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {str(n) for n in first.insecure_networks} == set(json.loads(listed.stdout))


# ---------------------------------------------------------------------------------------
# Real registries, the whole push
# ---------------------------------------------------------------------------------------


@dataclass
class Pushing:
    """A project that pushes `--to dockerhub`, that registry being `registry`."""

    project: Project
    registry: RegistryService
    cache: Path

    def env(self, repository: str, **extra: str) -> dict[str, str]:
        return self.project.env(
            SHIPIT_DOCKERHUB_REGISTRY=self.registry.host,
            SHIPIT_DOCKERHUB_REPOSITORY=repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=TOKEN,
            SHIPIT_PUSH_ATTEMPTS="1",
            XDG_CACHE_HOME=str(self.cache),
            DOCKER_CONFIG=str(self.cache / "docker"),
            **extra,
        )

    def push(self, repository: str, *args: str, **extra: str) -> Result:
        return self.project.shipit(
            "push", "--to", "dockerhub", "--json", *args, env=self.env(repository, **extra)
        )

    def served(self, repository: str, result: Result, **kwargs: object) -> set[str]:
        report = report_of(result)
        tag = report.get("push", report)["tags"][0]
        with RegistryReader(self.registry.host, HUB_USER, TOKEN, **kwargs) as reader:  # type: ignore[arg-type]
            return reader.image_ids(repository, tag)


@contextmanager
def pushing(project: Project, tmp_path: Path, **registry: object) -> Iterator[Pushing]:
    with RegistryService(username=HUB_USER, password=TOKEN, **registry) as service:  # type: ignore[arg-type]
        try:
            yield Pushing(project, service, tmp_path / "cache")
        finally:
            tagged = subprocess.run(
                ["docker", "images", "-q", "--filter", f"reference={service.host}/*"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if tagged and ":" not in service.address:
                subprocess.run(
                    ["docker", "rmi", "-f", *set(tagged)], capture_output=True, check=False
                )


def pushed_status(result: Result) -> str:
    return str(registries(report_of(result))["dockerhub"]["status"])


def test_ship_and_engine_push_to_a_private_ca_tls_registry_on_loopback(
    engine: Engine, project: Project, certs: CertificateSet, tmp_path: Path
) -> None:
    """The issue's case: `docker push` works, shipit answered "400 to GET ..."."""
    with (
        pushing(project, tmp_path, tls=certs) as push,
        engine_certs_d(push.registry.host, certs),
    ):
        shipped = project.shipit(
            "ship", "--to", "dockerhub", "--json", env=push.env("team/own-upload")
        )
        assert shipped.code == 0, shipped.output
        assert pushed_status(shipped) == "pushed"
        assert registries(report_of(shipped))["dockerhub"]["bytes_uploaded"] > 0
        image_id = report_of(shipped)["push"]["image_id"]
        assert image_id in push.served("team/own-upload", shipped)

        by_engine = push.push("team/engine-upload", SHIPIT_UPLOADER="engine")
        assert by_engine.code == 0, by_engine.output
        assert pushed_status(by_engine) == "pushed"
        assert image_id in push.served("team/engine-upload", by_engine)


def test_own_upload_to_a_registry_the_engine_verifies_needs_the_ca_in_etc_docker_certs_d(
    engine: Engine, project: Project, certs: CertificateSet, tmp_path: Path, tiny_base: str
) -> None:
    with pushing(project, tmp_path, tls=certs, address="::1") as push:
        assert engine.registry_rules().is_secure(push.registry.host), "::1 is insecure here"
        env = push.env("team/site", SHIPIT_BASE_IMAGE=tiny_base)
        assert project.shipit("build", env=env).code == 0

        refused = push.push("team/site", "--skip-smoke", SHIPIT_BASE_IMAGE=tiny_base)
        assert refused.code == ExitCode.REGISTRY_UNREACHABLE, refused.output
        line = refused.stderr.strip().splitlines()[-1]
        assert f"the TLS certificate of registry {push.registry.host} is not signed by" in line
        assert f"{ENGINE_CERTS_DIR}/{push.registry.host}/ca.crt" in line
        assert pushed_status(refused) == "failed"

        with engine_certs_d(push.registry.host, certs):
            pushed = push.push("team/site", "--skip-smoke", SHIPIT_BASE_IMAGE=tiny_base)
            assert pushed.code == 0, pushed.output
            assert pushed_status(pushed) == "pushed"
            assert report_of(pushed)["image_id"] in push.served("team/site", pushed)


def test_a_push_to_plain_http_that_the_engine_would_not_allow_fails_in_one_line(
    engine: Engine, project: Project, tmp_path: Path, tiny_base: str
) -> None:
    with pushing(project, tmp_path, address="::1") as push:
        assert project.shipit("build", env=push.env("team/site", SHIPIT_BASE_IMAGE=tiny_base))
        refused = push.push("team/site", "--skip-smoke", SHIPIT_BASE_IMAGE=tiny_base)
        assert refused.code == ExitCode.REGISTRY_UNREACHABLE, refused.output
        line = refused.stderr.strip().splitlines()[-1]
        assert f"registry {push.registry.host} answers plain HTTP" in line
        assert 'to "insecure-registries" in /etc/docker/daemon.json' in line


# ---------------------------------------------------------------------------------------
# An insecure plain-HTTP registry on a non-loopback address (10.251.0.1)
# ---------------------------------------------------------------------------------------

NETNS_RULES = rules(WITH_NETNS)


@pytest.mark.engine  # the remote one: it sets DOCKER_HOST itself
def test_an_insecure_http_registry_in_the_netns_through_the_remote_engine(
    project: Project, tmp_path: Path
) -> None:
    """The remote engine lists 10.251.0.0/30 as insecure (scripts/engines.sh) and pushes
    there over plain HTTP; shipit's own checks and verification must follow its rules."""
    engine_env = remote.plain_env()
    listed = remote.docker(
        engine_env, "info", "--format", "{{json .RegistryConfig.InsecureRegistryCIDRs}}"
    )
    assert NETNS_CIDR in listed, (
        f"the remote engine does not list {NETNS_CIDR} as insecure ({listed.strip()}): "
        "restart it with `bash scripts/engines.sh down remote; bash scripts/engines.sh up remote`"
    )
    try:
        with pushing(project, tmp_path, address=LOCAL_NETNS_IP) as push:
            env = {**push.env("team/remote"), **engine_env}
            built = project.shipit("build", env=env)
            assert built.code == 0, built.output
            pushed = project.shipit("push", "--to", "dockerhub", "--skip-smoke", "--json", env=env)
            assert pushed.code == 0, pushed.output
            assert pushed_status(pushed) == "pushed"
            served = push.served("team/remote", pushed, rules=NETNS_RULES)
            assert report_of(pushed)["image_id"] in served
            again = project.shipit("push", "--to", "dockerhub", "--skip-smoke", "--json", env=env)
            assert again.code == 0, again.output
            assert pushed_status(again) != "pushed"  # verified there, nothing to upload
    finally:
        remote.remove_leftovers(project.image)


def test_an_insecure_http_registry_in_the_netns_through_the_local_engine(
    engine: Engine, project: Project, tmp_path: Path, tiny_base: str
) -> None:
    listed = [str(network) for network in engine.registry_rules().insecure_networks]
    if NETNS_CIDR not in listed:
        pytest.fail(
            f"the local engine does not list {NETNS_CIDR} in insecure-registries ({listed}): "
            "stop dockerd and start it again with scripts/testenv.sh, which gives it "
            "a daemon.json that does",
            pytrace=False,
        )
    with pushing(project, tmp_path, address=LOCAL_NETNS_IP) as push:
        env = push.env("team/local", SHIPIT_BASE_IMAGE=tiny_base)
        assert project.shipit("build", env=env).code == 0
        pushed = push.push("team/local", "--skip-smoke", SHIPIT_BASE_IMAGE=tiny_base)
        assert pushed.code == 0, pushed.output
        assert pushed_status(pushed) == "pushed"
        assert registries(report_of(pushed))["dockerhub"]["bytes_uploaded"] > 0
        assert report_of(pushed)["image_id"] in push.served("team/local", pushed, rules=NETNS_RULES)
