"""What shipit attests of an image, built from real inputs: the example site rendered, package
databases as dpkg and apk write them, a smoke test over real HTTP. The SBOM is checked by an
independent validator (spdx-tools), the provenance by SLSA v1's field rules."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from shipit.assemble import Recipe, recipe_of
from shipit.assets import looks_fingerprinted
from shipit.attest.attestations import AttestedImage, attestations_for
from shipit.attest.packages import PackageCache, PackageDatabase, purl
from shipit.attest.provenance import BuildFacts, PlatformBase, slsa_provenance
from shipit.attest.sbom import spdx_sbom
from shipit.attest.site_files import (
    Sha1Cache,
    SiteFile,
    every_site_file,
    site_destination,
    site_files,
)
from shipit.attest.smoke import SmokeRun, earlier_smoke_run, smoke_predicate
from shipit.attest.statement import (
    SLSA_PROVENANCE_V1,
    SMOKE_TEST_V1,
    SPDX_DOCUMENT,
    STATEMENT_TYPE,
)
from shipit.config import load_settings
from shipit.load_archive import site_layer
from shipit.render import SERVED, RenderedSite, render_site
from shipit.smoke import run_smoke
from shipit.state import record_smoke_passed, smoke_pass_of
from tests.conftest import copy_example
from tests.slsa_rules import provenance_problems
from tests.test_smoke import ALL_HEADERS, SiteHandler, serve

BASE = "nginx:1.27.3-bookworm"
DIGEST = "sha256:" + "d" * 64
CREATED = "2026-12-04T03:54:22Z"

# As apk writes /lib/apk/db/installed (Alpine 3.20), file lists cut short.
APK_INSTALLED = """\
C:Q1abcdefghijklmnopqrstuvwxyz012345=
P:musl
V:1.2.5-r0
A:x86_64
S:411000
I:651264
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
t:1711991221
c:e1d4f2bcb2f0a4d9ff0e2c2b0f0b1c0e8a0b5a11
F:lib
R:ld-musl-x86_64.so.1

C:Q1zyxwvutsrqponmlkjihgfedcba543210=
P:nginx
V:1.26.2-r0
A:x86_64
L:BSD-2-Clause
o:nginx
U:https://www.nginx.org/
F:usr/sbin
R:nginx

P:libssl3
V:3.3.2-r0
A:x86_64
L:Apache-2.0
o:openssl
U:https://www.openssl.org/

P:alpine-release
V:3.20.3-r0
A:x86_64
L:MIT
o:alpine-base

P:busybox
V:1.36.1-r29
A:x86_64
L:GPL-2.0-only custom
o:busybox
"""

# As dpkg writes /var/lib/dpkg/status: one package removed but not purged, one with an
# epoch, one built from a source package of another version.
DPKG_STATUS = """\
Package: base-files
Essential: yes
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u9

Package: zlib1g
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: zlib
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime
 zlib is a library implementing the deflate compression method found
 in gzip and PKZIP.
Homepage: http://zlib.net/

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> RenderedSite:
    return render_site(copy_example(tmp_path_factory.mktemp("attest") / "p"), BASE)


def _recipe(site: RenderedSite) -> Recipe:
    recipe = recipe_of(site.files.generated["Dockerfile"].decode(), BASE, SERVED)
    assert isinstance(recipe, Recipe)
    return recipe


def _validated(document: dict[str, Any], tmp_path: Path) -> list[str]:
    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(document))
    return [
        message.validation_message for message in validate_full_spdx_document(parse_file(str(path)))
    ]


# Package databases


def test_apk_database_gives_every_package_with_license_origin_and_purl() -> None:
    packages = {
        each.name: each for each in PackageDatabase("apk", APK_INSTALLED.encode()).packages()
    }
    assert sorted(packages) == ["alpine-release", "busybox", "libssl3", "musl", "nginx"]
    nginx, ssl = packages["nginx"], packages["libssl3"]
    assert (nginx.version, nginx.architecture, nginx.license) == (
        "1.26.2-r0",
        "x86_64",
        "BSD-2-Clause",
    )
    assert nginx.source == "" and ssl.source == "openssl"
    assert purl(ssl, "alpine", "alpine-3.20.3") == (
        "pkg:apk/alpine/libssl3@3.3.2-r0?arch=x86_64&distro=alpine-3.20.3&upstream=openssl"
    )


def test_dpkg_status_gives_installed_packages_only_with_sources() -> None:
    packages = {
        each.name: each for each in PackageDatabase("dpkg", DPKG_STATUS.encode()).packages()
    }
    assert sorted(packages) == ["base-files", "libgcc-s1", "zlib1g"]
    assert (packages["zlib1g"].source, packages["zlib1g"].version) == ("zlib", "1:1.2.13.dfsg-1")
    assert packages["libgcc-s1"].source_version == "12.2.0-14"
    assert purl(packages["zlib1g"], "debian", "debian-12") == (
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
    )


def test_the_package_cache_keeps_a_database_by_image_id_and_refuses_other_keys(
    tmp_path: Path,
) -> None:
    cache = PackageCache(tmp_path / "packages")
    database = PackageDatabase("apk", APK_INSTALLED.encode())
    cache.put(DIGEST, database)
    assert cache.get(DIGEST) == database
    assert cache.get("sha256:" + "e" * 64) is None
    cache.put("../../escape", database)
    assert sorted(path.name for path in (tmp_path / "packages").iterdir()) == ["d" * 64]
    assert (tmp_path / "packages" / ("d" * 64)).stat().st_mode & 0o777 == 0o600


# Site files


def test_site_files_are_exactly_the_files_of_the_site_layer(site: RenderedSite) -> None:
    layer = b"".join(site_layer(site, _recipe(site)))
    in_layer = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                in_layer["/" + member.name] = (
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                    hashlib.sha1(data).hexdigest(),
                )
    listed = {each.path: (each.size, each.sha256, each.sha1) for each in site_files(site)}
    assert listed == in_layer
    assert "/srv/shipit/site/index.html" in listed and "/srv/shipit/nginx.conf" in listed


def test_a_dockerfile_that_copies_the_site_elsewhere_names_that_folder() -> None:
    assert site_destination("FROM x\nCOPY shipit/ /usr/share/nginx/html/\n", SERVED) == (
        "/usr/share/nginx/html"
    )
    assert site_destination("FROM x\nCOPY --chown=1 shipit/ /srv/\nRUN true\n", SERVED) == ""


# The SBOM


def _sbom(site: RenderedSite, database: str = APK_INSTALLED, kind: str = "apk") -> dict[str, Any]:
    packages = PackageDatabase(kind, database.encode()).packages()
    return spdx_sbom(
        DIGEST, "linux/amd64", packages, list(site_files(site)), CREATED, image_name="example-site"
    )


def test_the_sbom_validates_with_spdx_tools(site: RenderedSite, tmp_path: Path) -> None:
    document = _sbom(site)
    assert _validated(document, tmp_path) == []
    assert _validated(_sbom(site, DPKG_STATUS, "dpkg"), tmp_path) == []
    names = {package["name"] for package in document["packages"]}
    assert {"example-site", "site", "nginx", "musl"} <= names
    assert len(document["files"]) == len(list(site_files(site)))


def test_pyspdxtools_accepts_the_sbom_on_its_command_line(
    site: RenderedSite, tmp_path: Path
) -> None:
    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(_sbom(site)))
    tool = Path(sys.executable).parent / "pyspdxtools"
    done = subprocess.run([str(tool), "-i", str(path)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "breakage",
    ["a file without its SHA-1", "a relationship to nothing", "a namespace that is not a URI"],
)
def test_spdx_tools_rejects_a_broken_sbom(
    site: RenderedSite, tmp_path: Path, breakage: str
) -> None:
    document = _sbom(site)
    if breakage == "a file without its SHA-1":
        document["files"][0]["checksums"] = document["files"][0]["checksums"][1:]
    elif breakage == "a relationship to nothing":
        document["relationships"][1]["relatedSpdxElement"] = "SPDXRef-Nowhere"
    else:
        document["documentNamespace"] = "not a uri"
    assert _validated(document, tmp_path) != []


def test_the_sbom_names_the_image_and_its_contents_with_relationships(site: RenderedSite) -> None:
    document = _sbom(site)
    relations = {(r["spdxElementId"], r["relationshipType"]) for r in document["relationships"]}
    assert relations == {
        ("SPDXRef-DOCUMENT", "DESCRIBES"),
        ("SPDXRef-Image", "CONTAINS"),
        ("SPDXRef-Site", "CONTAINS"),
    }
    contained = [r for r in document["relationships"] if r["spdxElementId"] == "SPDXRef-Image"]
    assert len(contained) == len(document["packages"]) - 1  # all but the image itself
    busybox = next(p for p in document["packages"] if p["name"] == "busybox")
    licenses = {
        info["licenseId"]: info["extractedText"] for info in document["hasExtractedLicensingInfos"]
    }
    assert licenses[busybox["licenseDeclared"]] == "GPL-2.0-only custom"
    assert document["creationInfo"]["created"] == CREATED
    assert DIGEST.removeprefix("sha256:") in document["documentNamespace"]


def test_the_same_image_gives_the_same_sbom_bytes(site: RenderedSite, tmp_path: Path) -> None:
    twin = render_site(copy_example(tmp_path / "twin"), BASE)
    first, second = _sbom(site), _sbom(twin)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    other = spdx_sbom(
        "sha256:" + "e" * 64, "linux/amd64", (), list(site_files(site)), CREATED, image_name="x"
    )
    assert other["documentNamespace"] != first["documentNamespace"]


# Provenance


def _facts(**changes: Any) -> BuildFacts:
    facts = {
        "image": "example-site",
        "base_image": BASE,
        "platforms": (
            PlatformBase("linux/amd64", "sha256:" + "1" * 64, "sha256:" + "2" * 64),
            PlatformBase("linux/arm64", "", "sha256:" + "3" * 64),
        ),
        "tags": ("0123456789ab", "latest"),
        "build_id": "f" * 64,
        "context_digest": "c" * 64,
        "source_url": "https://github.com/example/site.git",
        "commit": "a" * 40,
        "dirty": False,
        "created": CREATED,
        "builder": "shipit",
        "started_on": dt.datetime(2026, 12, 4, 20, 0, 0, tzinfo=dt.UTC),
        "finished_on": dt.datetime(2026, 12, 4, 20, 0, 3, 250000, tzinfo=dt.UTC),
    }
    facts.update(changes)
    return BuildFacts(**facts)


def test_the_provenance_follows_slsa_v1s_rules() -> None:
    predicate = slsa_provenance(_facts())
    assert provenance_problems(predicate) == []
    dependencies = predicate["buildDefinition"]["resolvedDependencies"]
    assert dependencies[0]["uri"] == "git+https://github.com/example/site.git@" + "a" * 40
    assert dependencies[0]["digest"] == {"gitCommit": "a" * 40}
    assert [each["digest"] for each in dependencies[1:]] == [
        {"sha256": "1" * 64},
        {"sha256": "3" * 64},
    ]
    assert predicate["runDetails"]["metadata"] == {
        "invocationId": "f" * 64,
        "startedOn": "2026-12-04T20:00:00Z",
        "finishedOn": "2026-12-04T20:00:03.250000Z",
    }


def test_the_slsa_rules_find_a_broken_provenance() -> None:
    predicate = slsa_provenance(_facts(commit="A" * 12))
    assert "resolvedDependencies[0].digest.gitCommit is not lowercase hex" in (
        provenance_problems(predicate)
    )
    del predicate["buildDefinition"]["buildType"]
    assert "buildDefinition.buildType is not a URI" in provenance_problems(predicate)
    assert provenance_problems({"runDetails": {}}) == ["buildDefinition is missing"]


def test_a_project_without_a_commit_still_gives_valid_provenance() -> None:
    predicate = slsa_provenance(_facts(source_url="", commit="", dirty=True))
    assert provenance_problems(predicate) == []
    assert all(
        each["name"] != "source" for each in predicate["buildDefinition"]["resolvedDependencies"]
    )


# The smoke test


@pytest.fixture
def served() -> Iterator[str]:
    yield from serve(type("Good", (SiteHandler,), {"headers_to_send": ALL_HEADERS}))


def test_the_smoke_predicate_holds_every_check_of_a_real_smoke_test(served: str) -> None:
    report = run_smoke(served, "abc123")
    tested = dt.datetime(2026, 12, 4, 20, 1, tzinfo=dt.UTC)
    predicate = smoke_predicate(
        SmokeRun(report, "linux/amd64", "sha256:" + "2" * 64, tested), DIGEST
    )
    assert predicate["passed"] is True and predicate["url"] == served
    assert predicate["image"] == {"digest": DIGEST, "configDigest": "sha256:" + "2" * 64}
    assert (
        predicate["testedAt"] == "2026-12-04T20:01:00Z" and predicate["platform"] == "linux/amd64"
    )
    assert [check["name"] for check in predicate["checks"]] == [c.name for c in report.checks]
    assert all(check["passed"] for check in predicate["checks"])


def test_a_failed_check_is_attested_as_failed(served: str) -> None:
    report = run_smoke(served, "another-build")
    predicate = smoke_predicate(
        SmokeRun(report, "linux/amd64", "", dt.datetime.now(dt.UTC)), DIGEST
    )
    assert predicate["passed"] is False
    assert {check["name"] for check in predicate["checks"] if not check["passed"]} == {"build id"}


# All of them


def test_attestations_for_an_index_name_every_digest_they_belong_to(
    site: RenderedSite, served: str
) -> None:
    files = list(site_files(site))
    run = SmokeRun(
        run_smoke(served, "abc123"), "linux/amd64", "sha256:" + "2" * 64, dt.datetime.now(dt.UTC)
    )
    amd64, arm64, index = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
    images = [
        AttestedImage(
            "linux/arm64", arm64, CREATED, PackageDatabase("dpkg", DPKG_STATUS.encode()), None
        ),
        AttestedImage(
            "linux/amd64", amd64, CREATED, PackageDatabase("dpkg", DPKG_STATUS.encode()), run
        ),
    ]
    found = attestations_for("127.0.0.1:5000/example", _facts(), images, files, index)
    assert [each.predicate_type for each in found] == [
        SLSA_PROVENANCE_V1,
        SPDX_DOCUMENT,
        SMOKE_TEST_V1,
        SPDX_DOCUMENT,
    ]
    assert [each.digest for each in found[0].subjects] == [index, amd64, arm64]
    assert [each.digest for each in found[1].subjects] == [amd64, index]
    assert [each.digest for each in found[3].subjects] == [arm64, index]
    for attestation in found:
        document = json.loads(attestation.statement)
        assert document["_type"] == STATEMENT_TYPE
        assert document["predicateType"] == attestation.predicate_type
        assert {s["name"] for s in document["subject"]} == {"127.0.0.1:5000/example"}
    again = attestations_for("127.0.0.1:5000/example", _facts(), images, files, index)
    assert [each.statement for each in again] == [each.statement for each in found]


def test_no_secret_of_the_environment_reaches_an_attestation(
    site: RenderedSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-token-value"
    for name in ("DOCKERHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "SHIPIT_SIGNING_PASSWORD"):
        monkeypatch.setenv(name, secret)
    image = AttestedImage("linux/amd64", DIGEST, CREATED, None, None)
    found = attestations_for("r/x", _facts(), [image], list(site_files(site)))
    assert all(secret.encode() not in each.statement for each in found)


def test_a_file_listed_by_hand_gets_both_checksums_in_the_sbom() -> None:
    listed = SiteFile("/srv/shipit/a.txt", 1, "5" * 64, "6" * 40)
    document = spdx_sbom(DIGEST, "linux/arm64", (), [listed], CREATED, image_name="x")
    assert document["files"][0]["fileName"] == "./srv/shipit/a.txt"
    assert {c["algorithm"] for c in document["files"][0]["checksums"]} == {"SHA1", "SHA256"}


def test_a_reused_smoke_pass_is_attested_with_the_checks_it_passed(
    served: str, tmp_path: Path
) -> None:
    settings = load_settings(copy_example(tmp_path / "p"), environ={"HOME": str(tmp_path)})
    image_id = "sha256:" + "2" * 64
    assert earlier_smoke_run(settings, image_id, "linux/amd64") is None
    report = run_smoke(served, "abc123")
    record_smoke_passed(settings, image_id, "abc123", served, report.checks)
    run = earlier_smoke_run(settings, image_id, "linux/amd64")
    assert run is not None and run.report.checks == report.checks
    predicate = smoke_predicate(run, DIGEST)
    assert predicate["passed"] is True and predicate["url"] == served
    # What `shipit ship --json` says of the reused pass stays a map of strings.
    earlier = smoke_pass_of(settings, image_id)
    assert earlier is not None and "checks" not in earlier
    assert earlier_smoke_run(settings, "sha256:" + "3" * 64, "linux/amd64") is None


def test_a_static_files_sha1_is_read_once_then_kept_by_its_sha256(
    site: RenderedSite, tmp_path: Path
) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = every_site_file(site, environ)
    kept = (tmp_path / "cache" / "shipit" / "sha1-by-sha256").read_text().splitlines()
    static = [each for each in first if "/static/" in each.path]
    # One SHA-1 kept per file read from disk: a fingerprinted twin is the same bytes, and a
    # rewritten stylesheet and the .gz files are rendered, not read.
    from_disk = [
        each
        for each in static
        if not each.path.endswith(".gz") and not looks_fingerprinted(each.path)
    ]
    assert static and len(kept) == len(from_disk) == 2
    # A wrong SHA-1 kept for the logo's bytes comes back: the file was not read again.
    logo = next(each for each in static if each.path.endswith("/logo.svg"))
    cache = Sha1Cache.for_user(environ)
    cache.put(logo.sha256, "0" * 40)
    again = {each.path: each.sha1 for each in site_files(site, cache)}
    assert again[logo.path] == "0" * 40
    assert {each.path: each.sha1 for each in every_site_file(site, environ)} == {
        each.path: each.sha1 for each in first
    }


def test_every_statement_and_the_provenance_parse_as_in_totos_own_protos(
    site: RenderedSite,
) -> None:
    """in-toto's published protobuf schemas (in-toto-attestation): a field of the wrong
    name or type, or a timestamp that is not one, fails to parse."""
    image = AttestedImage("linux/amd64", DIGEST, CREATED, None, None)
    found = attestations_for("r/x", _facts(), [image], list(site_files(site)))
    for attestation in found:
        proto = json_format.Parse(attestation.statement, statement_pb2.Statement())
        Statement.copy_from_pb(proto).validate()
    provenance = json.loads(found[0].statement)["predicate"]
    parsed = json_format.ParseDict(provenance, provenance_pb2.Provenance())
    for dependency in parsed.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(dependency).validate()
    assert parsed.run_details.metadata.started_on.ToJsonString() == "2026-12-04T20:00:00Z"
    provenance["runDetails"]["metadata"]["startedOn"] = "yesterday"
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(provenance, provenance_pb2.Provenance())
