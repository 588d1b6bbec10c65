"""The Distribution reference grammar (shipit/reference.py), and a build from a base image
pinned by digest, pulled from a real registry on loopback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.services import RegistryService
from shipit.config import load_settings, split_reference
from shipit.engine import Engine
from shipit.errors import ConfigError
from shipit.reference import Reference, is_valid_host, parse_name, parse_reference
from tests.conftest import Project

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", Reference("", "nginx")),
        ("nginx:1.27", Reference("", "nginx", tag="1.27")),
        ("library/nginx:1.27", Reference("", "library/nginx", tag="1.27")),
        (
            f"nginx:1.27.3-bookworm@{DIGEST}",
            Reference("", "nginx", tag="1.27.3-bookworm", digest=DIGEST),
        ),
        (f"nginx@{DIGEST}", Reference("", "nginx", digest=DIGEST)),
        ("ghcr.io/acme/site", Reference("ghcr.io", "acme/site")),
        ("127.0.0.1:5000/acme/site:v1", Reference("127.0.0.1:5000", "acme/site", tag="v1")),
        ("localhost/site", Reference("localhost", "site")),
        ("localhost:5000/site", Reference("localhost:5000", "site")),
        ("[::1]:5000/acme/site:v1", Reference("[::1]:5000", "acme/site", tag="v1")),
        ("[2001:db8::1]/site", Reference("[2001:db8::1]", "site")),
        ("Registry.Example.com/a/b", Reference("Registry.Example.com", "a/b")),
        ("a__b/c-d/e---f/g.h_i", Reference("", "a__b/c-d/e---f/g.h_i")),
        (
            f"[::1]:5000/acme/site:1.2.3@{DIGEST}",
            Reference("[::1]:5000", "acme/site", "1.2.3", DIGEST),
        ),
    ],
)
def test_valid_references_parse_into_their_parts(text: str, expected: Reference) -> None:
    parsed = parse_reference(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "not a valid image repository name"),
        ("Nginx", "not a valid image repository name"),
        ("team/Site", "not a valid image repository name"),
        ("a..b", "not a valid image repository name"),
        ("a/-b", "not a valid image repository name"),
        ("a_-b", "not a valid image repository name"),
        ("a___b", "not a valid image repository name"),
        ("ghcr.io/", "not a valid image repository name"),
        ("host:99999/site", "not a valid image repository name"),
        ("-host.io/site", "not a valid image repository name"),
        ("[::1/site", "not a valid image repository name"),
        ("nginx:", "tag that is not valid"),
        ("nginx:.hidden", "tag that is not valid"),
        ("nginx:" + "x" * 129, "tag that is not valid"),
        ("nginx@sha256:abc", "digest that is not valid"),
        ("nginx@sha256:" + "ab" * 31, "digest that is not valid"),
        ("nginx@" + "ab" * 32, "digest that is not valid"),
        ("x" * 256, "not a valid image repository name"),
    ],
)
def test_invalid_references_say_which_part_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_reference(text)
    assert complaint in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_a_name_is_a_reference_without_tag_or_digest() -> None:
    assert parse_name("[::1]:5000/acme/site").repository == "[::1]:5000/acme/site"
    with pytest.raises(ConfigError):
        parse_name("nginx:1.27")


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("docker.io", True),
        ("127.0.0.1:5000", True),
        ("[::1]:5000", True),
        ("[fe80::1%eth0]:5000", True),
        ("localhost", True),
        ("host:0", False),
        ("host:65536", False),
        ("::1:5000", False),
        ("no/slashes", False),
        ("under_score.io", False),
    ],
)
def test_registry_hosts(host: str, valid: bool) -> None:
    assert is_valid_host(host) is valid


def test_settings_accept_pinned_bases_and_ipv6_registries(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path,
        environ={
            "SHIPIT_BASE_IMAGE": f"nginx:1.27.3-bookworm@{DIGEST}",
            "SHIPIT_DOCKERHUB_REGISTRY": "[::1]:5000",
            "SHIPIT_ECR_REGISTRY": "127.0.0.1:5001",
        },
    )
    assert settings.base_image.endswith(DIGEST)
    # What is pulled is the digest; the tag is there for people.
    assert split_reference(settings.base_image) == ("nginx", DIGEST)


def test_a_build_pulls_and_uses_a_base_image_pinned_by_digest(
    engine: Engine, project: Project, tiny_base: str
) -> None:
    with RegistryService(auth="none") as registry:
        mirrored = f"{registry.host}/mirror/tiny-{project.image.rsplit('/', 1)[-1]}:1"
        subprocess.run(["docker", "tag", tiny_base, mirrored], check=True)
        pushed = subprocess.run(
            ["docker", "push", mirrored], capture_output=True, text=True, check=True
        )
        digest = pushed.stdout.split("digest: ", 1)[1].split()[0]
        untagged = mirrored.rsplit(":", 1)[0]
        try:
            # Gone from the engine: the build has to pull it, by digest.
            subprocess.run(["docker", "rmi", mirrored], capture_output=True, check=True)
            pinned = f"{mirrored}@{digest}"
            built = project.shipit("build", "--json", env=project.env(SHIPIT_BASE_IMAGE=pinned))
            assert built.code == 0, built.output
            assert json.loads(built.stdout)["base_image"] == pinned
            assert engine.image(f"{untagged}@{digest}") is not None
        finally:
            subprocess.run(
                ["docker", "rmi", f"{untagged}@{digest}"], capture_output=True, check=False
            )
