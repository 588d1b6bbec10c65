"""Settings: file, then environment, then flags, each value knowing where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.config import DEFAULT_BASE_IMAGE, load_settings, split_reference
from shipit.errors import ConfigError


def write(project: Path, text: str, name: str = "shipit.toml") -> Path:
    project.mkdir(parents=True, exist_ok=True)
    (project / name).write_text(text)
    return project


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    assert settings.base_image == DEFAULT_BASE_IMAGE
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.origins["port"] == "default"


def test_file_then_environment_then_flag(tmp_path: Path) -> None:
    write(tmp_path, 'port = 9000\nimage = "from-file"\nhost = "127.0.0.2"\n')
    settings = load_settings(
        tmp_path,
        overrides={"port": 9002},
        environ={"SHIPIT_PORT": "9001", "SHIPIT_IMAGE": "from-env"},
    )
    assert settings.port == 9002 and settings.origins["port"] == "flag --port"
    assert settings.image == "from-env" and settings.origins["image"] == "environment SHIPIT_IMAGE"
    assert settings.host == "127.0.0.2" and settings.origins["host"] == "shipit.toml"


def test_pyproject_tool_table_is_read(tmp_path: Path) -> None:
    write(tmp_path, '[tool.shipit]\nimage = "team/site"\n', name="pyproject.toml")
    settings = load_settings(tmp_path, environ={})
    assert settings.image == "team/site"
    assert settings.origins["image"] == "pyproject.toml [tool.shipit]"


def test_aws_region_falls_back_to_standard_variable(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"AWS_REGION": "eu-west-1"})
    assert settings.aws_region == "eu-west-1"
    assert settings.origins["aws_region"] == "environment AWS_REGION"


def test_malformed_file_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, 'image = "ok"\nport = = 3\n')
    with pytest.raises(ConfigError, match=r"shipit\.toml is not valid TOML: .*line 2"):
        load_settings(tmp_path, environ={})


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 'imgae = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'imgae'"):
        load_settings(tmp_path, environ={})


def test_credentials_in_the_file_are_refused(tmp_path: Path) -> None:
    write(tmp_path, 'dockerhub_token = "dckr_pat_123"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert "dckr_pat_123" not in caught.value.one_line()
    assert "DOCKERHUB_TOKEN" in caught.value.one_line()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"SHIPIT_PORT": "70000"}, "port 70000 is out of range"),
        ({"SHIPIT_PORT": "0"}, "port 0 is out of range"),
        ({"SHIPIT_PORT": "eighty"}, "is not a whole number"),
        ({"SHIPIT_IMAGE": "Bad Name"}, "is not a valid image repository name"),
        ({"SHIPIT_IMAGE": "team/Site"}, "is not a valid image repository name"),
        ({"SHIPIT_BASE_IMAGE": "nginx:-bad"}, "has a tag that is not valid: '-bad'"),
        ({"AWS_REGION": "moon-base-1x"}, "is not a region name"),
        ({"SHIPIT_ECR_TAG_MUTABILITY": "sometimes"}, "tag mutability 'sometimes' is not valid"),
        ({"SHIPIT_DOCKERHUB_REGISTRY": "no/slashes"}, "is not a host name"),
    ],
)
def test_bad_values_are_one_line_errors_naming_their_origin(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=environ)
    message = caught.value.one_line()
    assert expected in message
    assert message.startswith("environment ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("nginx", ("nginx", "latest")),
        ("nginx:1.27", ("nginx", "1.27")),
        ("127.0.0.1:5000/team/site:abc", ("127.0.0.1:5000/team/site", "abc")),
        ("127.0.0.1:5000/team/site", ("127.0.0.1:5000/team/site", "latest")),
    ],
)
def test_split_reference(reference: str, expected: tuple[str, str]) -> None:
    assert split_reference(reference) == expected
