"""The package database read from a real container through the engine, checked against what
dpkg itself says inside that container."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipit.attest.packages import (
    DPKG_STATUS,
    PackageCache,
    package_database,
    read_package_database,
)
from shipit.attest.provenance import facts_of_build, slsa_provenance
from shipit.attest.sbom import spdx_sbom
from shipit.attest.site_files import rendered_site_of, site_files
from shipit.config import LOCAL_BASE_IMAGE, load_settings
from shipit.engine import Engine
from shipit.errors import PreconditionError
from shipit.pipeline import build
from tests.conftest import Project
from tests.slsa_rules import provenance_problems


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def nginx_container(engine: Engine) -> Iterator[str]:
    name = f"shipit-test-attest-{uuid.uuid4().hex[:10]}"
    # The base's own nginx stops at once (it has no /var/log/nginx): a shell that waits runs.
    container_id = _docker("run", "-d", "--name", name, LOCAL_BASE_IMAGE, "sleep", "600").strip()
    try:
        yield container_id
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)


def test_the_dpkg_status_of_a_running_container_lists_what_dpkg_query_lists(
    engine: Engine, nginx_container: str
) -> None:
    database = read_package_database(engine, nginx_container)
    assert database is not None and database.kind == "dpkg"
    listed = _docker(
        "exec",
        nginx_container,
        "dpkg-query",
        "-W",
        "-f=${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
    )
    installed = {
        tuple(line.split()[1:]) for line in listed.splitlines() if line.startswith("installed ")
    }
    read = {(each.name, each.version, each.architecture) for each in database.packages()}
    assert read == installed
    assert any(name == "nginx" for name, _, _ in read)
    sbom = spdx_sbom(
        "sha256:" + "a" * 64,
        "linux/amd64",
        database.packages(),
        (),
        "1970-01-01T00:00:00Z",
        image_name="x",
    )
    nginx = next(p for p in sbom["packages"] if p["name"] == "nginx")
    assert nginx["externalRefs"][0]["referenceLocator"].startswith("pkg:deb/debian/nginx@")
    assert "distro=debian-12" in nginx["externalRefs"][0]["referenceLocator"]


def test_a_path_the_container_lacks_is_none(engine: Engine, nginx_container: str) -> None:
    assert engine.container_archive(nginx_container, "/lib/apk/db/installed") is None
    archive = engine.container_archive(nginx_container, DPKG_STATUS)
    assert archive is not None and b"Package: nginx" in archive


def test_a_database_read_once_is_kept_for_an_image_that_runs_no_container(
    engine: Engine, nginx_container: str, tmp_path: Path
) -> None:
    image_id = _docker("inspect", "--format", "{{.Image}}", nginx_container).strip()
    cache = PackageCache(tmp_path / "packages")
    assert package_database(engine, "", image_id, cache) is None  # nothing read, nothing kept
    read = package_database(engine, nginx_container, image_id, cache)
    assert read is not None
    assert package_database(engine, "", image_id, cache) == read


def test_an_image_without_a_package_database_has_none(engine: Engine, tiny_base: str) -> None:
    # Created, never started: the engine reads a stopped container's files as well.
    container_id = _docker("create", tiny_base, "/no-such-command").strip()
    try:
        assert read_package_database(engine, container_id) is None
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)


def test_a_built_image_is_attested_from_its_labels_and_holds_exactly_the_listed_files(
    engine: Engine, project: Project, tmp_path: Path
) -> None:
    settings = load_settings(project.root, environ=project.env(HOME=str(tmp_path)))
    started = dt.datetime.now(dt.UTC)
    built = build(settings, engine)
    facts = facts_of_build(built, ("latest",), started, dt.datetime.now(dt.UTC))
    predicate = slsa_provenance(facts)
    assert provenance_problems(predicate) == []
    assert facts.image == project.image and facts.builder == "shipit"
    assert facts.created == built.info.labels["org.opencontainers.image.created"]
    assert [base.platform for base in facts.platforms] == ["linux/amd64"]
    assert facts.platforms[0].image_id == engine.image(LOCAL_BASE_IMAGE).id  # type: ignore[union-attr]
    # The build ran in no git repository: no source is claimed.
    assert facts.commit == "" and facts.source_url == ""

    # Rendered again (as for an image found unchanged): the very files the image holds.
    listed = {each.path: each.sha256 for each in site_files(rendered_site_of(settings, built))}
    container_id = _docker("create", built.image_id).strip()
    try:
        archive = engine.container_archive(container_id, "/srv/shipit")
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)
    assert archive is not None
    held = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                held["/srv/" + member.name] = hashlib.sha256(data).hexdigest()
    assert listed == held

    # A site edited since the build is refused, not misdescribed.
    style = project.root / "site" / "static" / "style.css"
    style.write_text(style.read_text() + "\nbody { margin: 0 }\n")
    with pytest.raises(PreconditionError, match="the site changed"):
        rendered_site_of(settings, built)
