"""The ECR token cache's own logic: its key, the half-life rule, the file's safety, and the
one lookup again through AWS that a stale entry gets during a push."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from harness.targets import StandInRegistry, target_of
from shipit.config import load_settings
from shipit.errors import AuthError, ConfigError, TagConflictError
from shipit.push.retry import with_retries
from shipit.push.targets import Target
from shipit.redact import MASK, redact
from shipit.registries.credentials import Credentials
from shipit.registries.ecr_cache import (
    CACHE_FILE,
    CachedRepository,
    CachedToken,
    TokenCache,
    cache_directory,
    cache_key,
    cache_slot,
    cache_wanted,
    credential_fingerprint,
)

HOUR = 3600.0
ISSUED = 1_800_000_000.0
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "IQoJb3JpZ2luX2VjEXAMPLE-session-token-" + "x" * 200


def token(password: str = "ecr-password-1", issued: float = ISSUED) -> CachedToken:
    return CachedToken(
        "AWS", password, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", issued, issued + 12 * HOUR
    )


def env_keys(**extra: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE1", "AWS_SECRET_ACCESS_KEY": SECRET, **extra}


class Clock:
    def __init__(self, now: float = ISSUED) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cache_in(tmp_path: Path, clock: Clock | None = None) -> TokenCache:
    return TokenCache(tmp_path / "cache" / "shipit", clock=clock or Clock())


def store(cache: TokenCache, key: str = "k", *, password: str = "ecr-password-1") -> None:
    cache.store(
        key,
        account="123456789012",
        arn="arn:aws:sts::123456789012:assumed-role/deploy/me",
        token=token(password),
        repository=(
            "site",
            CachedRepository("123456789012.dkr.ecr.eu-west-1.amazonaws.com/site", "MUTABLE"),
        ),
    )


# The key: computed without boto3, different for different credentials, holding no secret.


def test_the_key_changes_with_key_id_session_token_region_and_endpoint() -> None:
    base = env_keys()
    fingerprint = credential_fingerprint(base)
    assert fingerprint is not None
    keys = {
        cache_key(fingerprint, "eu-west-1", base),
        cache_key(fingerprint, "us-east-1", base),
        cache_key(fingerprint, "eu-west-1", {**base, "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}),
        cache_key(fingerprint, "eu-west-1", {**base, "AWS_ENDPOINT_URL_ECR": "http://x"}),
    }
    for changed in (
        env_keys(AWS_ACCESS_KEY_ID="AKIAEXAMPLE2"),
        env_keys(AWS_SESSION_TOKEN=SESSION),
        env_keys(AWS_SESSION_TOKEN=SESSION + "y"),
    ):
        other = credential_fingerprint(changed)
        assert other is not None and other != fingerprint
        keys.add(cache_key(other, "eu-west-1", changed))
    assert len(keys) == 7
    # The secret key alone does not identify credentials (the key id does), and is never kept.
    assert credential_fingerprint(env_keys(AWS_SECRET_ACCESS_KEY="other")) == fingerprint


def test_the_fingerprint_holds_no_secret() -> None:
    fingerprint = credential_fingerprint(env_keys(AWS_SESSION_TOKEN=SESSION))
    assert fingerprint is not None
    assert SECRET not in fingerprint
    assert SESSION not in fingerprint
    assert SESSION[:40] not in fingerprint


def write_aws_files(home: Path, config: str, credentials: str = "") -> dict[str, str]:
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "config").write_text(config)
    (home / ".aws" / "credentials").write_text(credentials)
    return {"HOME": str(home)}


SSO = """[profile dev]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Deploy
region = eu-west-1
[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
"""


def test_profiles_are_fingerprinted_from_the_shared_files(tmp_path: Path) -> None:
    environ = write_aws_files(
        tmp_path,
        SSO
        + "[profile ops]\nrole_arn = arn:aws:iam::123456789012:role/ops\nsource_profile = dev\n",
        f"[keys]\naws_access_key_id = AKIAFILE\naws_secret_access_key = {SECRET}\n",
    )
    sso = credential_fingerprint({**environ, "AWS_PROFILE": "dev"})
    role = credential_fingerprint({**environ, "AWS_PROFILE": "ops"})
    keys = credential_fingerprint({**environ, "AWS_PROFILE": "keys"})
    assert sso and "123456789012\nDeploy" in sso
    assert role and "arn:aws:iam::123456789012:role/ops" in role
    assert keys and "AKIAFILE" in keys and SECRET not in keys
    assert len({sso, role, keys}) == 3
    # An edit of the files (another role, new keys) is another key.
    config = tmp_path / ".aws" / "config"
    config.write_text(config.read_text().replace("Deploy", "Admin"))
    assert credential_fingerprint({**environ, "AWS_PROFILE": "dev"}) not in (sso, None)
    # Keys in the environment come first, as in boto3's chain.
    assert credential_fingerprint({**environ, **env_keys(), "AWS_PROFILE": "dev"}) == (
        credential_fingerprint(env_keys())
    )


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("[default]\ncredential_process = /bin/creds\n", {}),
        ("[default]\nregion = eu-west-1\n", {}),  # an instance or container role
        (
            "[default]\nrole_arn = arn:aws:iam::1:role/r\nweb_identity_token_file = /t\n",
            {},
        ),
        ("", {"AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}),
        ("", {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"}),
        ("", {"AWS_ACCESS_KEY_ID": "AKIAONLY"}),  # half a pair: boto3 says what is wrong
        ("[profile missing-sso-role]\nsso_account_id = 1\n", {"AWS_PROFILE": "missing-sso-role"}),
    ],
)
def test_credentials_that_cannot_be_fingerprinted_cheaply_are_not_cached(
    tmp_path: Path, config: str, extra: dict[str, str]
) -> None:
    environ = {**write_aws_files(tmp_path, config), **extra}
    assert credential_fingerprint(environ) is None
    assert cache_slot("on", "eu-west-1", environ) is None


def test_on_by_default_except_in_ci_unless_asked_for() -> None:
    assert cache_wanted("auto", {}) is True
    assert cache_wanted("auto", {"CI": "true"}) is False
    assert cache_wanted("auto", {"CI": "1"}) is False
    assert cache_wanted("auto", {"CI": "false"}) is True
    assert cache_wanted("on", {"CI": "true"}) is True
    assert cache_wanted("off", {}) is False
    assert cache_slot("off", "eu-west-1", env_keys()) is None
    assert cache_slot("auto", "", env_keys()) is None


def test_the_setting_and_the_flag(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"SHIPIT_ECR_CACHE": "true"})
    assert settings.ecr_cache == "on"
    settings = load_settings(tmp_path, {"ecr_cache": "off"}, environ={"SHIPIT_ECR_CACHE": "on"})
    assert settings.ecr_cache == "off"
    assert settings.origins["ecr_cache"] == "flag --no-cache"
    assert load_settings(tmp_path, environ={}).ecr_cache == "auto"
    with pytest.raises(ConfigError, match="is not auto, on or off"):
        load_settings(tmp_path, environ={"SHIPIT_ECR_CACHE": "sometimes"})


def test_the_cache_folder_follows_xdg() -> None:
    assert cache_directory({"XDG_CACHE_HOME": "/x/c", "HOME": "/h"}) == Path("/x/c/shipit")
    assert cache_directory({"HOME": "/h"}) == Path("/h/.cache/shipit")
    assert cache_directory({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path("/h/.cache/shipit")


# The half-life rule.


def test_a_token_serves_only_the_first_half_of_its_life() -> None:
    cached = token()
    assert cached.usable(ISSUED)
    assert cached.usable(ISSUED + 6 * HOUR - 1)
    assert not cached.usable(ISSUED + 6 * HOUR)
    assert not cached.usable(ISSUED + 11 * HOUR)
    assert not cached.usable(ISSUED - 3600)  # a clock set back: not trusted
    # What stock moto answers (expiresAt in 2015) is never usable.
    assert not CachedToken("AWS", "p", "e", ISSUED, 1_420_070_400.0).usable(ISSUED)


def test_lookup_follows_the_clock(tmp_path: Path) -> None:
    clock = Clock()
    cache = cache_in(tmp_path, clock)
    store(cache)
    assert cache.lookup("k", "site") is not None
    assert cache.lookup("k", "other-repository") is None
    assert cache.lookup("other-key", "site") is None
    clock.now = ISSUED + 6 * HOUR + 1
    assert cache.lookup("k", "site") is None
    assert cache.warnings == []


# The file.


def test_file_is_0600_in_a_0700_folder_and_written_whole(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    store(cache)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    assert os.listdir(cache.directory) == [CACHE_FILE]
    hit = cache.lookup("k", "site")
    assert hit is not None and hit.token.password == "ecr-password-1"
    assert "ecr-password-1" not in repr(hit)
    assert redact("token ecr-password-1 here") == f"token {MASK} here"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = cache_in(tmp_path)
    store(cache)
    before = cache.path.read_bytes()

    def no_rename(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    store(cache, password="ecr-password-2")
    assert cache.path.read_bytes() == before
    assert os.listdir(cache.directory) == [CACHE_FILE]
    assert cache.warnings == [
        f"could not write the ECR token cache {cache.path}: No space left on device"
    ]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_file_others_can_read_is_refused_once_and_left_alone(tmp_path: Path, mode: int) -> None:
    cache = cache_in(tmp_path)
    store(cache)
    os.chmod(cache.path, mode)
    before = cache.path.read_bytes()
    refusing = cache_in(tmp_path)
    assert refusing.lookup("k", "site") is None
    assert refusing.lookup("k", "site") is None
    store(refusing, password="ecr-password-3")
    assert cache.path.read_bytes() == before
    assert len(refusing.warnings) == 1
    assert "other users can read or write it" in refusing.warnings[0]


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    store(cache_in(tmp_path))
    stranger = TokenCache(tmp_path / "cache" / "shipit", clock=Clock(), uid=os.getuid() + 1)
    assert stranger.lookup("k", "site") is None
    assert len(stranger.warnings) == 1
    assert "owned by you" in stranger.warnings[0]


def test_a_corrupt_file_is_ignored_with_one_warning_then_replaced(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    cache.directory.mkdir(parents=True, mode=0o700)
    descriptor = os.open(cache.path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(descriptor, b'{"format": 1, "entries": [not json')
    os.close(descriptor)
    assert cache.lookup("k", "site") is None
    assert cache.lookup("k", "site") is None
    assert len(cache.warnings) == 1 and "not shipit's JSON" in cache.warnings[0]
    store(cache)
    assert cache.lookup("k", "site") is not None
    assert json.loads(cache.path.read_text())["format"] == 1


def test_expired_entries_are_pruned_and_repositories_kept_with_a_new_token(tmp_path: Path) -> None:
    clock = Clock()
    cache = cache_in(tmp_path, clock)
    store(cache, key="old")
    store(cache, key="k")
    cache.add_repository("k", "docs", CachedRepository("u/docs", "IMMUTABLE"))
    clock.now = ISSUED + 7 * HOUR
    cache.store(
        "k",
        account="123456789012",
        arn="arn:aws:sts::123456789012:assumed-role/deploy/me",
        token=token("ecr-password-2", issued=clock.now),
        repository=None,
    )
    entries = json.loads(cache.path.read_text())["entries"]
    assert list(entries) == ["k"]
    hit = cache.lookup("k", "docs")
    assert hit is not None and hit.repository.tag_mutability == "IMMUTABLE"
    assert hit.token.password == "ecr-password-2"


# A stale entry during a push: one lookup through AWS, then the step once more.


def cached_target(registry: StandInRegistry) -> Target:
    return target_of(
        registry,
        login=Credentials("AWS", "cached-token"),
        cached=True,
        notes=("ECR token from cache (expires 20:00, used until 14:00)",),
    )


def fresh_target(mutability: str = "MUTABLE") -> Target:
    return target_of(
        StandInRegistry(), login=Credentials("AWS", "fresh-token"), mutability=mutability
    )


@pytest.mark.parametrize(
    "refusal",
    [AuthError("registry refused"), TagConflictError("immutable tag")],
)
def test_a_refusal_of_a_cached_target_is_looked_up_again_once(refusal: Exception) -> None:
    registry = StandInRegistry(fresh=fresh_target("IMMUTABLE"))
    target = cached_target(registry)
    used: list[str] = []

    def step(on: Target) -> str:
        used.append(on.login.password)
        if on.login.password == "cached-token":
            raise refusal
        return "pushed"

    tried = with_retries(target, 3, lambda _: None, step)
    assert (tried.result(), tried.attempts) == ("pushed", 1)
    assert used == ["cached-token", "fresh-token"]
    assert registry.calls == ["looked up"]
    assert tried.target.mutability == "IMMUTABLE"
    assert tried.target.notes == ("looked up again",)
    assert target.notes == ("ECR token from cache (expires 20:00, used until 14:00)",)


def test_a_refusal_after_the_fresh_lookup_is_the_error() -> None:
    registry = StandInRegistry(fresh=fresh_target())
    target = cached_target(registry)

    def step(_: Target) -> str:
        raise AuthError("denied")

    tried = with_retries(target, 3, lambda _: None, step)
    with pytest.raises(AuthError, match="denied"):
        tried.result()
    assert registry.calls == ["looked up"]
    # The report shows the notes of the target the push ended with.
    assert tried.target.notes == ("looked up again",)


def test_a_target_not_from_the_cache_fails_at_once() -> None:
    target = fresh_target()
    calls: list[int] = []

    def step(_: Target) -> str:
        calls.append(1)
        raise TagConflictError("immutable")

    with pytest.raises(TagConflictError):
        with_retries(target, 3, lambda _: None, step).result()
    assert calls == [1]
