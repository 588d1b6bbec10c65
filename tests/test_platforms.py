"""Platforms: docker's spelling and matching, what --platform, SHIPIT_PLATFORMS and the
platforms setting choose, which platforms a base image can give, and the engine's own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shipit.config import load_settings
from shipit.engine import Engine
from shipit.errors import ConfigError, ExitCode, PlatformError, UsageError
from shipit.platforms import Platform, PlatformChoice
from tests.conftest import Project

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
ARM64_V8 = Platform("linux", "arm64", "v8")
ARM_V7 = Platform("linux", "arm", "v7")
ATTESTATION = Platform("unknown", "unknown")
# Docker Hub's nginx index, as its entries name their platforms (attestations between them).
NGINX = (
    AMD64,
    ATTESTATION,
    Platform("linux", "arm", "v5"),
    ARM_V7,
    ARM64_V8,
    Platform("linux", "386"),
    Platform("linux", "mips64le"),
    Platform("linux", "ppc64le"),
    Platform("linux", "s390x"),
)
NGINX_OFFERS = (
    "linux/amd64, linux/arm/v5, linux/arm/v7, linux/arm64/v8, linux/386, linux/mips64le, "
    "linux/ppc64le, linux/s390x"
)


@pytest.mark.parametrize(
    ("text", "expected", "printed"),
    [
        ("linux/amd64", AMD64, "linux/amd64"),
        ("linux/arm64", ARM64, "linux/arm64"),
        ("linux/arm64/v8", ARM64_V8, "linux/arm64/v8"),
        ("linux/arm/v7", ARM_V7, "linux/arm/v7"),
        ("linux/arm/7", ARM_V7, "linux/arm/v7"),
        (" Linux/AMD64 ", AMD64, "linux/amd64"),
        ("linux/x86_64", AMD64, "linux/amd64"),
        ("linux/aarch64", ARM64, "linux/arm64"),
        ("linux/armhf", ARM_V7, "linux/arm/v7"),
        ("windows/amd64", Platform("windows", "amd64"), "windows/amd64"),
    ],
)
def test_a_platform_is_read_and_printed_as_docker_spells_it(
    text: str, expected: Platform, printed: str
) -> None:
    assert Platform.parse(text) == expected
    assert str(Platform.parse(text)) == printed


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("linux", "it has no architecture"),
        ("linux/", "its architecture is empty"),
        ("/arm64", "its os is empty"),
        ("linux/arm64/", "its variant is empty"),
        ("linux/arm64/v8/x", "it has 4 parts, and at most 3 are allowed"),
        ("", "it has no architecture"),
        ("linux/arm 64", "its architecture 'arm 64' holds more than letters"),
        ("Linux/ARM64/v8/x", "it has 4 parts"),
        ("linux/amd64:latest", "its architecture 'amd64:latest' holds more than letters"),
    ],
)
def test_a_malformed_platform_is_one_line_saying_what_is_wrong_and_how_to_write_it(
    text: str, why: str
) -> None:
    with pytest.raises(PlatformError) as caught:
        Platform.parse(text)
    line = caught.value.one_line()
    assert f"platform {text!r} is not os/architecture[/variant]: {why}" in line
    assert "e.g. linux/amd64, linux/arm64 or linux/arm/v7" in line
    assert "\n" not in line
    assert caught.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize(
    ("asked", "offered"),
    [
        ("linux/arm64", ARM64_V8),
        ("linux/arm64/v8", ARM64),
        ("linux/aarch64", ARM64_V8),
        ("linux/arm", ARM_V7),
        ("linux/arm/v7", Platform("linux", "arm")),
        ("linux/amd64", Platform("linux", "amd64", "v1")),
        ("linux/x86_64", AMD64),
        ("LINUX/AMD64", Platform("Linux", "AMD64")),
    ],
)
def test_platforms_match_as_docker_normalises_them(asked: str, offered: Platform) -> None:
    assert Platform.parse(asked).matches(offered)
    assert offered.matches(Platform.parse(asked))


@pytest.mark.parametrize(
    ("asked", "offered"),
    [
        ("linux/arm64", AMD64),
        ("linux/arm/v7", Platform("linux", "arm", "v6")),
        ("linux/arm64", Platform("linux", "arm64", "v9")),
        ("linux/amd64", Platform("windows", "amd64")),
        ("linux/amd64", Platform("linux", "amd64", "v3")),
    ],
)
def test_other_platforms_do_not_match(asked: str, offered: Platform) -> None:
    assert not Platform.parse(asked).matches(offered)


def test_a_platform_comes_from_an_index_entry_or_an_image_config_and_goes_back() -> None:
    entry = {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert Platform.of(entry) == ARM64_V8
    assert Platform.of(entry).descriptor() == entry
    config = {"architecture": "amd64", "os": "linux", "rootfs": {}, "config": {}}
    assert Platform.of(config) == AMD64
    assert AMD64.descriptor() == {"architecture": "amd64", "os": "linux"}
    assert Platform.of({}) == ATTESTATION and ATTESTATION.is_unknown
    assert sorted([ARM64, AMD64, ARM_V7]) == [AMD64, ARM_V7, ARM64]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], PlatformChoice()),
        (["linux/amd64"], PlatformChoice((AMD64,))),
        (["linux/amd64,linux/arm64"], PlatformChoice((AMD64, ARM64))),
        (["linux/arm64", "linux/amd64"], PlatformChoice((ARM64, AMD64))),
        (["linux/arm64, linux/amd64", "linux/arm/v7"], PlatformChoice((ARM64, AMD64, ARM_V7))),
        (
            ["linux/arm64", "linux/aarch64", "linux/arm64/v8", "linux/amd64"],
            PlatformChoice((ARM64, AMD64)),
        ),
        (["all"], PlatformChoice(every=True)),
        (["ALL", "all"], PlatformChoice(every=True)),
    ],
)
def test_a_choice_takes_repeated_and_comma_separated_platforms_each_once_in_order(
    values: list[str], expected: PlatformChoice
) -> None:
    assert PlatformChoice.parse(values) == expected


@pytest.mark.parametrize(
    ("values", "wrong", "what_to_do"),
    [
        (["linux/amd64,"], "the platform list 'linux/amd64,' has an empty item", "single commas"),
        (["linux/amd64,,linux/arm64"], "has an empty item", "single commas"),
        (["linux/amd64", ""], "the platform list 'linux/amd64,' has an empty item", "commas"),
        (["all,linux/amd64"], "'all,linux/amd64' mixes 'all' with platforms", "give either all"),
        (
            ["linux/amd64", "all"],
            "mixes 'all' with platforms",
            "(every platform of the base image) or platforms",
        ),
        (["linux/amd64,linux"], "platform 'linux' is not os/architecture", "e.g. linux/amd64"),
    ],
)
def test_a_bad_list_is_one_line(values: list[str], wrong: str, what_to_do: str) -> None:
    with pytest.raises(PlatformError) as caught:
        PlatformChoice.parse(values)
    line = caught.value.one_line()
    assert wrong in line and what_to_do in line.split("; ", 1)[1]
    assert "\n" not in line


def test_the_choice_resolves_to_the_base_s_platforms_in_the_user_s_order() -> None:
    choice = PlatformChoice.parse(["linux/arm64,linux/amd64"])
    # Each as the base names it (arm64/v8), so its entry is found by equality.
    assert choice.resolve(NGINX, AMD64, "nginx:1.27") == (ARM64_V8, AMD64)
    assert PlatformChoice().resolve(NGINX, ARM64, "nginx:1.27") == (ARM64_V8,)
    assert PlatformChoice().resolve(NGINX, AMD64, "nginx:1.27") == (AMD64,)


def test_all_is_every_platform_of_the_base_in_its_order_without_attestations() -> None:
    every = PlatformChoice(every=True).resolve(NGINX, AMD64, "nginx:1.27")
    assert every == tuple(platform for platform in NGINX if platform != ATTESTATION)
    duplicated = (AMD64, ATTESTATION, ARM64, ATTESTATION, ARM64_V8)
    assert PlatformChoice(every=True).resolve(duplicated, AMD64, "b") == (AMD64, ARM64)


def test_a_single_platform_base_gives_its_one_platform() -> None:
    assert PlatformChoice().resolve((ARM64,), AMD64, "arm-only") == (ARM64,)
    assert PlatformChoice(every=True).resolve((AMD64,), AMD64, "local") == (AMD64,)
    assert PlatformChoice.parse(["linux/amd64"]).resolve((AMD64,), AMD64, "local") == (AMD64,)


def test_a_platform_the_base_lacks_names_the_base_and_what_it_offers() -> None:
    choice = PlatformChoice.parse(["linux/amd64,linux/riscv64"])
    with pytest.raises(PlatformError) as caught:
        choice.resolve(NGINX, AMD64, "nginx:1.27")
    line = caught.value.one_line()
    assert line == (
        f"base image nginx:1.27 has no linux/riscv64; it offers {NGINX_OFFERS}; choose among "
        "those with --platform or the platforms setting, or use a base image built for "
        "linux/riscv64"
    )
    assert caught.value.exit_code == ExitCode.CONFIG


def test_an_index_without_the_engine_s_platform_says_so() -> None:
    with pytest.raises(PlatformError) as caught:
        PlatformChoice().resolve((ARM64_V8, ARM_V7), AMD64, "arm-index")
    assert caught.value.one_line() == (
        "base image arm-index has no image for this engine's platform linux/amd64; it offers "
        "linux/arm64/v8, linux/arm/v7; choose among those with --platform or the platforms "
        "setting, or use a base image built for linux/amd64"
    )


@pytest.mark.parametrize(
    "asked", [["linux/arm64"], ["linux/amd64,linux/arm64"], ["linux/arm64,linux/amd64"]]
)
def test_a_single_platform_base_asked_for_another_or_several_names_its_one(
    asked: list[str],
) -> None:
    with pytest.raises(PlatformError) as caught:
        PlatformChoice.parse(asked).resolve((AMD64,), AMD64, "shipit-local/nginx:bookworm")
    line = caught.value.one_line()
    assert line.startswith(
        "base image shipit-local/nginx:bookworm is a single-platform image (linux/amd64), so it "
        f"cannot give {asked[0].replace(',', ', ')}; build linux/amd64 only "
        "(--platform linux/amd64), or use a multi-platform base image"
    )
    assert "\n" not in line


def test_a_base_that_names_no_platform_is_an_error() -> None:
    with pytest.raises(PlatformError, match="base image odd names no platform"):
        PlatformChoice(every=True).resolve((ATTESTATION,), AMD64, "odd")


def test_run_serves_the_engine_s_platform_when_named_else_the_first() -> None:
    assert PlatformChoice().one_to_run(AMD64) == AMD64
    assert PlatformChoice(every=True).one_to_run(ARM64) == ARM64
    assert PlatformChoice.parse(["linux/arm64,linux/amd64"]).one_to_run(AMD64) == AMD64
    assert PlatformChoice.parse(["linux/arm64/v8,linux/amd64"]).one_to_run(ARM64) == ARM64_V8
    assert PlatformChoice.parse(["linux/arm64,linux/arm/v7"]).one_to_run(AMD64) == ARM64


def test_a_flag_for_run_must_name_one_platform() -> None:
    PlatformChoice.parse(["linux/arm64"]).require_one("run", "--platform")
    for several in (["linux/arm64,linux/amd64"], ["all"]):
        with pytest.raises(UsageError) as caught:
            PlatformChoice.parse(several).require_one("run", "--platform")
        assert caught.value.one_line().startswith("run serves one platform, and --platform names")
        assert "name one, e.g. --platform linux/arm64" in caught.value.one_line()
        assert caught.value.exit_code == ExitCode.USAGE


def test_the_setting_comes_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}).platforms == PlatformChoice()
    (tmp_path / "shipit.toml").write_text('platforms = ["linux/amd64", "linux/arm64"]\n')
    settings = load_settings(tmp_path, environ={})
    assert settings.platforms == PlatformChoice((AMD64, ARM64))
    assert settings.origins["platforms"] == "shipit.toml"
    assert settings.as_dict()["platforms"] == ("linux/amd64", "linux/arm64")
    (tmp_path / "shipit.toml").write_text('platforms = "linux/arm64,linux/arm/v7"\n')
    assert load_settings(tmp_path, environ={}).platforms == PlatformChoice((ARM64, ARM_V7))
    settings = load_settings(tmp_path, environ={"SHIPIT_PLATFORMS": "all"})
    assert settings.platforms.every
    assert settings.origins["platforms"] == "environment SHIPIT_PLATFORMS"
    settings = load_settings(
        tmp_path, {"platforms": ["linux/amd64", "linux/amd64"]}, {"SHIPIT_PLATFORMS": "all"}
    )
    assert settings.platforms == PlatformChoice((AMD64,))
    assert settings.origins["platforms"] == "flag --platform"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('platforms = ["linux/amd64", ""]', "shipit.toml: the platform list 'linux/amd64,' has"),
        ('platforms = ["linux"]', "shipit.toml: platform 'linux' is not os/architecture"),
        ("platforms = 64", "shipit.toml: platforms = 64 is not a list of strings"),
    ],
)
def test_a_bad_setting_in_the_file_names_the_file(tmp_path: Path, toml: str, expected: str) -> None:
    (tmp_path / "shipit.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert caught.value.one_line().startswith(expected)


def _project(tmp_path: Path) -> Project:
    return Project(root=tmp_path, image="shipit-test/platforms")


def test_shipit_config_shows_the_platforms_and_where_they_came_from(tmp_path: Path) -> None:
    project = _project(tmp_path)
    shown = project.shipit("config", "--json")
    assert shown.code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["settings"]["platforms"] == []
    assert document["origins"]["platforms"] == "default"

    shown = project.shipit(
        "config", "--json", env=project.env(SHIPIT_PLATFORMS="linux/arm64,linux/amd64")
    )
    document = json.loads(shown.stdout)
    assert document["settings"]["platforms"] == ["linux/arm64", "linux/amd64"]
    assert document["origins"]["platforms"] == "environment SHIPIT_PLATFORMS"

    (tmp_path / "shipit.toml").write_text('platforms = ["linux/aarch64", "linux/arm/v7"]\n')
    shown = project.shipit("config")
    assert shown.code == 0, shown.output
    row = next(line for line in shown.stdout.splitlines() if line.startswith("platforms "))
    assert row.split() == ["platforms", "linux/arm64,", "linux/arm/v7", "shipit.toml"]


@pytest.mark.parametrize("command", ["build", "run", "push", "ship"])
def test_a_malformed_flag_is_one_line_and_exit_3_before_anything_is_done(
    tmp_path: Path, command: str
) -> None:
    project = _project(tmp_path)
    failed = project.shipit(command, "--platform", "linux/amd64", "--platform", "linux", "--json")
    assert failed.code == ExitCode.CONFIG, failed.output
    error = json.loads(failed.stdout)["error"]
    assert error["class"] == "PlatformError"
    assert error["message"] == (
        "flag --platform: platform 'linux' is not os/architecture[/variant]: it has no architecture"
    )
    assert error["hint"] == "write it as docker does, e.g. linux/amd64, linux/arm64 or linux/arm/v7"
    plain = project.shipit(command, "--platform", "all,linux/amd64")
    assert plain.code == ExitCode.CONFIG
    assert plain.stdout == ""
    assert plain.stderr.count("\n") == 1, plain.stderr
    assert "flag --platform: the platform list 'all,linux/amd64' mixes 'all'" in plain.stderr
    assert not (tmp_path / ".shipit").exists()


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    project = _project(tmp_path)
    failed = project.shipit("config", env=project.env(SHIPIT_PLATFORMS="linux/arm64/v8/x"))
    assert failed.code == ExitCode.CONFIG
    assert failed.stderr.startswith(
        "shipit: error: environment SHIPIT_PLATFORMS: platform 'linux/arm64/v8/x' is not "
    )
    assert failed.stderr.count("\n") == 1


@pytest.mark.parametrize("several", ["linux/amd64,linux/arm64", "all"])
def test_run_with_a_flag_naming_several_platforms_is_a_usage_error(
    tmp_path: Path, several: str
) -> None:
    project = _project(tmp_path)
    failed = project.shipit("run", "--platform", several)
    assert failed.code == ExitCode.USAGE, failed.output
    assert failed.stderr.startswith("shipit: error: run serves one platform, and --platform")
    assert failed.stderr.count("\n") == 1
    assert not (tmp_path / ".shipit").exists()


def test_the_engine_names_its_own_platform(engine: Engine) -> None:
    docker_says = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert str(engine.platform()) == docker_says == "linux/amd64"
    assert engine.platform() == AMD64
