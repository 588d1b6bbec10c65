"""`shipit ship` of an image that already passed its smoke test here does not run it again;
anything that makes the pass stale (new content, another shipit version, --resmoke) does."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import PublishProject, Result, shipit_containers
from tests.test_publish import ecr_client


def report_of(result: Result) -> dict[str, Any]:
    assert result.code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@contextmanager
def port_taken() -> Iterator[int]:
    """A port that a container cannot be published on: a ship that tries to run fails."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def statuses(report: dict[str, Any]) -> set[str]:
    return {entry["status"] for entry in report["push"]["registries"]}


def test_ship_reuses_a_smoke_pass_of_the_very_same_image(
    engine: Engine, publish_project: PublishProject
) -> None:
    project = publish_project
    first = report_of(project.shipit("ship", "--json"))
    image_id = first["build"]["image_id"]
    assert first["run"]["smoke"]["ok"] is True
    assert first["smoke_reused"] is None

    with port_taken() as port:
        second = project.shipit("ship", "--json", env=project.env(SHIPIT_PORT=str(port)))
        again = report_of(second)
    assert again["build"]["built"] is False
    assert again["run"] is None
    assert again["smoke_reused"]["image_id"] == image_id
    assert statuses(again) == {"unchanged"}
    assert "passed its smoke test" in second.stderr
    assert shipit_containers(project.image) == []

    # --resmoke runs it, so the taken port now stops the ship before any push.
    with port_taken() as port:
        forced = project.shipit(
            "ship", "--resmoke", "--json", env=project.env(SHIPIT_PORT=str(port))
        )
    assert forced.code == ExitCode.RUN, forced.output
    assert f"port 127.0.0.1:{port} is already in use" in forced.stderr
    assert shipit_containers(project.image) == []


def test_a_pass_by_another_shipit_version_does_not_count(
    engine: Engine, publish_project: PublishProject
) -> None:
    project = publish_project
    report_of(project.shipit("ship", "--json"))
    state_file = Path(project.root) / ".shipit" / "state.json"
    state = json.loads(state_file.read_text())
    for record in (state["smoke_passed"], *state["smoke_passes"].values()):
        record["shipit_version"] = "0.0.1"
    state_file.write_text(json.dumps(state))

    again = report_of(project.shipit("ship", "--json"))
    assert again["build"]["built"] is False
    assert again["smoke_reused"] is None
    assert again["run"]["smoke"]["ok"] is True
    assert shipit_containers(project.image) == []


def test_a_changed_site_is_smoke_tested_again(
    engine: Engine, publish_project: PublishProject
) -> None:
    project = publish_project
    first = report_of(project.shipit("ship", "--json"))
    site_toml = Path(project.root) / "site" / "site.toml"
    edited, count = re.subn(
        r'^message = ".*"$', 'message = "Edited."', site_toml.read_text(), flags=re.MULTILINE
    )
    assert count == 1
    site_toml.write_text(edited)

    with port_taken() as port:
        changed = project.shipit("ship", "--json", env=project.env(SHIPIT_PORT=str(port)))
    assert changed.code == ExitCode.RUN, changed.output

    again = report_of(project.shipit("ship", "--json"))
    assert again["build"]["image_id"] != first["build"]["image_id"]
    assert again["run"]["smoke"]["ok"] is True
    assert statuses(again) == {"pushed"}
    assert shipit_containers(project.image) == []


def test_a_failed_smoke_test_creates_no_ecr_repository(
    engine: Engine, publish_project: PublishProject
) -> None:
    """ship looks up the registries while it builds and tests; creating waits for the push."""
    project = publish_project
    nginx_conf = Path(project.root) / "templates" / "nginx.conf.j2"
    nginx_conf.write_text(
        "\n".join(
            line for line in nginx_conf.read_text().splitlines() if "X-Frame-Options" not in line
        )
    )
    failed = project.shipit("ship")
    assert failed.code == ExitCode.SMOKE, failed.output
    assert shipit_containers(project.image) == []
    names = [
        r["repositoryName"] for r in ecr_client(project).describe_repositories()["repositories"]
    ]
    assert project.ecr_repository not in names
