"""[[registries]] in shipit.toml, --to, and where each registry's credentials come from:
named variables, or what `docker login` stored (config.json auths, credsStore and
credHelpers through a real docker-credential-<helper> program)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import sys
from pathlib import Path

import pytest

from harness.services import RegistryService, TokenService
from shipit.config import load_settings
from shipit.engine import Engine
from shipit.errors import AuthError, ConfigError, ExitCode
from shipit.redact import redact
from shipit.registries.catalog import configured_registries, select_registries
from shipit.registries.credentials import Credentials, stored_credentials
from shipit.registries.oci import OciRegistry
from tests.conftest import Project

REGISTRIES = """
ecr_repository = "site"
dockerhub_repository = "acme/site"

[[registries]]
name = "ghcr"
repository = "ghcr.io/acme/site"
username_env = "GHCR_USER"
password_env = "GHCR_TOKEN"

[[registries]]
name = "local"
repository = "[::1]:5000/acme/site"
tag_mutability = "immutable"
"""


def test_ecr_and_docker_hub_come_first_then_each_table(tmp_path: Path) -> None:
    (tmp_path / "shipit.toml").write_text(REGISTRIES)
    settings = load_settings(tmp_path, environ={"SHIPIT_ECR_REGISTRY": "127.0.0.1:5001"})
    listed = configured_registries(settings)
    assert [(spec.name, spec.kind, spec.host, spec.repository) for spec in listed] == [
        ("ecr", "ecr", "127.0.0.1:5001", "site"),
        ("dockerhub", "oci", "docker.io", "acme/site"),
        ("ghcr", "oci", "ghcr.io", "acme/site"),
        ("local", "oci", "[::1]:5000", "acme/site"),
    ]
    assert listed[2].credential_source == "environment GHCR_USER/GHCR_TOKEN"
    assert listed[3].credential_source == "docker credential store (read-only)"
    assert listed[3].tag_mutability == "IMMUTABLE"
    assert settings.as_dict()["registries"][0]["repository"] == "ghcr.io/acme/site"


@pytest.mark.parametrize(
    ("to", "names"),
    [
        ("all", ["ecr", "dockerhub", "ghcr", "local"]),
        ("", ["ecr", "dockerhub", "ghcr", "local"]),
        ("ghcr", ["ghcr"]),
        ("local, ECR", ["ecr", "local"]),
        ("dockerhub,ghcr,dockerhub", ["dockerhub", "ghcr"]),
    ],
)
def test_to_selects_in_configured_order(tmp_path: Path, to: str, names: list[str]) -> None:
    (tmp_path / "shipit.toml").write_text(REGISTRIES)
    selected = select_registries(load_settings(tmp_path, environ={}), to)
    assert [spec.name for spec in selected] == names


def test_an_unknown_name_in_to_names_it_and_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "shipit.toml").write_text(REGISTRIES)
    with pytest.raises(ConfigError) as caught:
        select_registries(load_settings(tmp_path, environ={}), "ghcr,quay")
    assert caught.value.one_line() == (
        "--to names 'quay', which is not a configured registry; known: ecr, dockerhub, ghcr, "
        "local, all (more come from [[registries]] in shipit.toml)"
    )


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('name = "ghcr"', "registry 'ghcr': repository is missing"),
        ('repository = "ghcr.io/a/b"', "[[registries]] #1: name None is not a registry name"),
        ('name = "GHCR"\nrepository = "ghcr.io/a/b"', "name 'GHCR' is not a registry name"),
        ('name = "ecr"\nrepository = "ghcr.io/a/b"', "the name 'ecr' is already taken"),
        ('name = "x"\nrepository = "ghcr.io/A/b"', "registry 'x': repository 'ghcr.io/A/b'"),
        ('name = "x"\nrepository = "r.io/a"\nurl = "y"', "registry 'x': unknown key 'url'"),
        (
            'name = "x"\nrepository = "r.io/a"\npassword = "hunter2"',
            "credentials do not belong in a file that gets committed",
        ),
        (
            'name = "x"\nrepository = "r.io/a"\nusername_env = "U"',
            "registry 'x': username_env is set but password_env is not",
        ),
        (
            'name = "x"\nrepository = "r.io/a"\nusername_env = "U"\npassword_env = "my token"',
            "password_env = 'my token' is not an environment variable name",
        ),
        ('name = "x"\nrepository = "r.io/a"\ntag_mutability = "x"', "tag mutability 'x'"),
        ('name = "x"\nrepository = 5', "registry 'x': repository = 5 is not a string"),
    ],
)
def test_bad_tables_are_one_line_config_errors(tmp_path: Path, table: str, complaint: str) -> None:
    (tmp_path / "shipit.toml").write_text(f"[[registries]]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    line = caught.value.one_line()
    assert complaint in line
    assert line.startswith("shipit.toml: ")
    assert "hunter2" not in line
    assert "\n" not in line


def test_two_tables_with_one_name(tmp_path: Path) -> None:
    table = '[[registries]]\nname = "a"\nrepository = "r.io/a"\n'
    (tmp_path / "shipit.toml").write_text(table * 2)
    with pytest.raises(ConfigError, match="the name 'a' is already taken"):
        load_settings(tmp_path, environ={})


# Credentials


def docker_config(tmp_path: Path, config: dict[str, object]) -> dict[str, str]:
    folder = tmp_path / "docker-config"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(folder), "PATH": os.environ["PATH"]}


def install_helper(tmp_path: Path, environ: dict[str, str], store: dict[str, list[str]]) -> Path:
    """A real docker-credential-<helper> program speaking the `get` protocol; it logs the
    server URLs it was asked for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "helper.log"
    helper = bin_dir / "docker-credential-shipittest"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"store = {store!r}\n"
        "assert sys.argv[1:] == ['get'], sys.argv\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(log)!r}, 'a').write(server + '\\n')\n"
        "if server not in store:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "user, secret = store[server]\n"
        "print(json.dumps({'ServerURL': server, 'Username': user, 'Secret': secret}))\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    environ["PATH"] = f"{bin_dir}{os.pathsep}{environ['PATH']}"
    return log


def test_auths_with_auth_with_fields_and_with_an_identity_token(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"bob:pw-from-auth").decode()
    environ = docker_config(
        tmp_path,
        {
            "auths": {
                "https://ghcr.io": {"auth": encoded},
                "[::1]:5000": {"username": "ann", "password": "pw-from-fields"},
                "https://index.docker.io/v1/": {"identitytoken": "refresh-token-123"},
                "quay.io": {},
            }
        },
    )
    ghcr = stored_credentials("ghcr.io", environ)
    assert ghcr is not None
    assert ghcr.auth_config() == {"username": "bob", "password": "pw-from-auth"}
    local = stored_credentials("[::1]:5000", environ)
    assert local is not None
    assert local.auth_config() == {"username": "ann", "password": "pw-from-fields"}
    # Docker Hub's login keeps an OAuth refresh token; it goes as identitytoken, not a password.
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        hub = stored_credentials(host, environ)
        assert hub is not None
        assert hub.auth_config() == {"username": "<token>", "identitytoken": "refresh-token-123"}
    assert stored_credentials("quay.io", environ) is None
    assert stored_credentials("example.com", environ) is None
    # Never printed: every secret read is masked in shipit's output from then on.
    assert "refresh-token-123" not in redact("token refresh-token-123")
    assert "pw-from-auth" not in redact("pw-from-auth")


def test_a_credential_helper_and_a_store(tmp_path: Path) -> None:
    environ = docker_config(
        tmp_path, {"credsStore": "shipittest", "credHelpers": {"ghcr.io": "shipittest"}}
    )
    log = install_helper(
        tmp_path,
        environ,
        {
            "ghcr.io": ["ghcr-user", "ghcr-pat"],
            "https://index.docker.io/v1/": ["<token>", "hub-identity-token"],
        },
    )
    ghcr = stored_credentials("ghcr.io", environ)
    assert ghcr is not None
    assert ghcr.auth_config() == {"username": "ghcr-user", "password": "ghcr-pat"}
    assert ghcr.source == "docker credential helper shipittest"
    hub = hub_credentials(tmp_path, environ)
    assert hub.auth_config() == {"username": "<token>", "identitytoken": "hub-identity-token"}
    assert stored_credentials("quay.io", environ) is None
    assert log.read_text().split() == ["ghcr.io", "https://index.docker.io/v1/", "quay.io"]
    config = json.loads((Path(environ["DOCKER_CONFIG"]) / "config.json").read_text())
    assert config == {"credsStore": "shipittest", "credHelpers": {"ghcr.io": "shipittest"}}


def hub_credentials(tmp_path: Path, environ: dict[str, str]) -> Credentials:
    """Docker Hub's credentials as the catalogue's Docker Hub row looks them up."""
    project = tmp_path / "hub-project"
    project.mkdir(exist_ok=True)
    hub = configured_registries(load_settings(project, environ={}))[1]
    assert hub.name == "dockerhub" and hub.host == "docker.io"
    return OciRegistry(hub).credentials(environ)


def test_a_helper_that_is_not_installed_is_named(tmp_path: Path) -> None:
    environ = docker_config(tmp_path, {"credsStore": "no-such-helper-here"})
    with pytest.raises(ConfigError, match="docker-credential-no-such-helper-here is not on PATH"):
        stored_credentials("ghcr.io", environ)


def test_docker_hub_variables_come_before_the_store(tmp_path: Path) -> None:
    environ = docker_config(tmp_path, {"auths": {"docker.io": {"identitytoken": "stored"}}})
    chosen = hub_credentials(
        tmp_path, {**environ, "DOCKERHUB_USERNAME": "ci", "DOCKERHUB_TOKEN": "dckr_pat_x"}
    )
    assert chosen.auth_config() == {"username": "ci", "password": "dckr_pat_x"}
    assert chosen.source == "environment DOCKERHUB_USERNAME/DOCKERHUB_TOKEN"
    with pytest.raises(AuthError, match="DOCKERHUB_TOKEN is set but DOCKERHUB_USERNAME is not"):
        hub_credentials(tmp_path, {**environ, "DOCKERHUB_TOKEN": "dckr_pat_x"})
    with pytest.raises(AuthError, match=r"no credentials for docker\.io"):
        hub_credentials(tmp_path, docker_config(tmp_path, {}))


def test_an_entry_with_missing_credentials_names_itself_and_the_setting(tmp_path: Path) -> None:
    (tmp_path / "shipit.toml").write_text(REGISTRIES)
    settings = load_settings(tmp_path, environ={})
    _, _, ghcr, local = configured_registries(settings)
    environ = docker_config(tmp_path, {})
    with pytest.raises(ConfigError) as caught:
        OciRegistry(ghcr).credentials({**environ, "GHCR_USER": "acme"})
    assert caught.value.one_line() == (
        "registry 'ghcr': password_env GHCR_TOKEN not set in the environment; export the "
        "account and its token there (CI: from a secret)"
    )
    assert caught.value.exit_code == ExitCode.CONFIG
    found = OciRegistry(ghcr).credentials({**environ, "GHCR_USER": "acme", "GHCR_TOKEN": "ghp_x"})
    assert found.auth_config() == {"username": "acme", "password": "ghp_x"}
    with pytest.raises(ConfigError) as missing:
        OciRegistry(local).credentials(environ)
    assert missing.value.one_line() == (
        "registry 'local': no credentials for [::1]:5000; set username_env and password_env in "
        "its [[registries]] table, or `docker login [::1]:5000`"
    )


def test_to_on_the_command_line(project: Project) -> None:
    (project.root / "shipit.toml").write_text(REGISTRIES)
    result = project.shipit("push", "--to", "ecr,quay", "--dry-run")
    assert result.code == ExitCode.CONFIG
    assert result.stderr.strip().splitlines() == [
        "shipit: error: --to names 'quay', which is not a configured registry; known: ecr, "
        "dockerhub, ghcr, local, all (more come from [[registries]] in shipit.toml)"
    ]
    config = project.shipit("config", "--json")
    assert config.code == 0, config.output
    assert [entry["name"] for entry in json.loads(config.stdout)["settings"]["registries"]] == [
        "ghcr",
        "local",
    ]


def test_an_identity_token_from_docker_login_pushes_through_a_real_engine(
    engine: Engine, tiny_base: str, tmp_path: Path
) -> None:
    """What Docker Hub's `docker login` stores (an identitytoken, no password) is what the
    engine is given, and the engine trades it at the token service (OAuth2 refresh grant)."""
    identity_token = "idt-" + secrets.token_urlsafe(16)
    tokens = TokenService({"shipit": "not-used-here"})
    tokens.refresh_tokens[identity_token] = "shipit"
    with tokens, RegistryService(auth="token", token_service=tokens) as registry:
        environ = docker_config(
            tmp_path, {"auths": {registry.host: {"identitytoken": identity_token}}}
        )
        found = stored_credentials(registry.host, environ)
        assert found is not None
        assert "password" not in found.auth_config()
        repository = f"{registry.host}/team/identity-{secrets.token_hex(4)}"
        engine.tag(tiny_base, repository, "1")
        try:
            pushed = engine.push(repository, "1", found.auth_config())
            assert pushed.error == "", pushed.lines
            assert pushed.digest.startswith("sha256:")
            assert any(request.authenticated for request in tokens.requests)
            # A token that is not the one stored is refused: the engine really used it.
            wrong = {"username": "<token>", "identitytoken": "idt-wrong"}
            refused = engine.push(repository, "1", wrong)
            assert refused.error
        finally:
            engine.untag(f"{repository}:1")


def test_doctor_checks_each_registries_entry(engine: Engine, project: Project) -> None:
    (project.root / "shipit.toml").write_text(REGISTRIES)
    missing = project.shipit("doctor", "--to", "ghcr", "--json")
    assert missing.code == ExitCode.DOCTOR, missing.output
    checks = {check["name"]: check for check in json.loads(missing.stdout)["checks"]}
    assert checks["ghcr_repository"]["outcome"] == "ok"
    assert checks["ghcr_repository"]["detail"] == "acme/site on ghcr.io"
    assert checks["ghcr_credentials"]["outcome"] == "fail"
    assert "username_env GHCR_USER" in checks["ghcr_credentials"]["detail"]
    assert not {"dockerhub_credentials", "aws_credentials"} & set(checks)

    env = project.env(GHCR_USER="acme-bot", GHCR_TOKEN="ghp_doctor-test-token-1234")
    found = project.shipit("doctor", "--to", "ghcr", "--json", env=env)
    assert found.code == 0, found.output
    checks = {check["name"]: check for check in json.loads(found.stdout)["checks"]}
    assert checks["ghcr_credentials"]["detail"] == (
        "user acme-bot for ghcr.io, from environment GHCR_USER/GHCR_TOKEN"
    )
    assert "ghp_doctor-test-token-1234" not in found.output


def test_shipit_pushes_and_verifies_with_an_identity_token_only(
    engine: Engine, tiny_base: str, project: Project, tmp_path: Path
) -> None:
    """A [[registries]] entry whose only credential is the identitytoken `docker login`
    stored: the engine pushes with it and shipit's own reads and tag PUTs trade it at the
    token service too (OAuth2 refresh grant), never sending it as a password."""
    identity_token = "idt-" + secrets.token_urlsafe(16)
    tokens = TokenService({"shipit": "not-used-here"})
    tokens.refresh_tokens[identity_token] = "shipit"
    with tokens, RegistryService(auth="token", token_service=tokens) as registry:
        (project.root / "shipit.toml").write_text(
            f'[[registries]]\nname = "tok"\nrepository = "{registry.host}/team/site"\n'
        )
        config = docker_config(
            tmp_path, {"auths": {registry.host: {"identitytoken": identity_token}}}
        )
        env = project.env(SHIPIT_BASE_IMAGE=tiny_base, **config)
        built = project.shipit("build", env=env)
        assert built.code == 0, built.output
        pushed = project.shipit("push", "--to", "tok", "--skip-smoke", "--json", env=env)
        assert pushed.code == 0, pushed.output
        (entry,) = json.loads(pushed.stdout)["registries"]
        statuses = [(tag["tag"], tag["status"]) for tag in entry["tags"]]
        assert [status for _, status in statuses] == ["pushed", "pushed"], statuses
        assert statuses[1][0] == "latest"  # moved by shipit's own manifest PUT
        assert entry["notes"] == [f"credentials from {tmp_path}/docker-config/config.json auths"]
        assert identity_token not in pushed.output


@pytest.mark.parametrize(
    ("environ", "to", "names"),
    [
        ({"SHIPIT_DOCKERHUB_REPOSITORY": "acme/site"}, None, ["dockerhub"]),
        ({"SHIPIT_DOCKERHUB_REPOSITORY": "acme/site"}, "all", ["dockerhub"]),
        ({"SHIPIT_ECR_REPOSITORY": "site"}, None, ["ecr"]),
        ({"SHIPIT_ECR_REPOSITORY": "site"}, "", ["ecr"]),
        # Named explicitly, ECR is taken with its default repository (the image name).
        ({"SHIPIT_DOCKERHUB_REPOSITORY": "acme/site"}, "ecr", ["ecr"]),
        ({"SHIPIT_TO": "ecr"}, None, ["ecr"]),
        ({"SHIPIT_TO": "ECR, dockerhub", "SHIPIT_ECR_REPOSITORY": "s"}, "dockerhub", ["dockerhub"]),
    ],
)
def test_without_to_only_the_registries_with_a_repository(
    tmp_path: Path, environ: dict[str, str], to: str | None, names: list[str]
) -> None:
    selected = select_registries(load_settings(tmp_path, environ=environ), to)
    assert [spec.name for spec in selected] == names


def test_a_registries_table_counts_as_configured(tmp_path: Path) -> None:
    (tmp_path / "shipit.toml").write_text(REGISTRIES.split("\n", 3)[3])
    selected = select_registries(load_settings(tmp_path, environ={}))
    assert [spec.name for spec in selected] == ["ghcr", "local"]


def test_nothing_configured_says_what_to_set(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    for to in (None, "all"):
        with pytest.raises(ConfigError) as caught:
            select_registries(settings, to)
        assert caught.value.one_line() == (
            "no registry to push to; set SHIPIT_ECR_REPOSITORY or SHIPIT_DOCKERHUB_REPOSITORY "
            "(or [[registries]] in shipit.toml)"
        )
    assert select_registries(settings, allow_none=True) == ()


@pytest.mark.parametrize(
    ("toml", "environ", "complaint"),
    [
        ('to = ["quay"]', {}, "shipit.toml: to names 'quay', which is not a configured registry"),
        ("", {"SHIPIT_TO": "all,ecr"}, "environment SHIPIT_TO: to 'all,ecr' mixes 'all'"),
        ('to = "ecr/x"', {}, "shipit.toml: to 'ecr/x' is not a registry name"),
        ("to = 3", {}, "shipit.toml: to = 3 is not"),
    ],
)
def test_the_to_setting_is_checked_like_the_flag(
    tmp_path: Path, toml: str, environ: dict[str, str], complaint: str
) -> None:
    (tmp_path / "shipit.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        select_registries(load_settings(tmp_path, environ=environ))
    assert caught.value.one_line().startswith(complaint), caught.value.one_line()


def test_config_shows_to_with_its_origin(project: Project) -> None:
    (project.root / "shipit.toml").write_text('to = "dockerhub, ecr"\n')
    result = project.shipit("config", "--json")
    assert result.code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["settings"]["to"] == ["dockerhub", "ecr"]
    assert shown["origins"]["to"] == "shipit.toml"
