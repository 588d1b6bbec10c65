"""What push and ship leave for a pipeline: GitHub's step files, `-q` lines, whole digests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.services import moto_ecr_password
from shipit.errors import PushError
from shipit.push.github import summary_markdown, write_step_files
from shipit.push.report import PushReport, TagOutcome, TargetReport
from shipit.redact import register_secret
from shipit.ui import Ui
from tests.conftest import PublishProject
from tests.test_publish import served_digest

DIGEST = "sha256:" + "ab12" * 16


def parse_github_output(text: str) -> dict[str, str]:
    """GitHub's GITHUB_OUTPUT format: `name=value` lines and `name<<DELIMITER` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value: list[str] = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            else:
                raise AssertionError(f"{name}: no closing delimiter {delimiter}")
            outputs[name] = "\n".join(value)
        elif line:
            name, value_text = line.split("=", 1)
            outputs[name] = value_text
    return outputs


def served_at(project: PublishProject, reference: str) -> str | None:
    """The manifest digest a REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST is served as."""
    assert project.ecr and project.hub
    host, rest = reference.split("/", 1)
    repository, ref = rest.split("@") if "@" in rest else rest.rsplit(":", 1)
    if host == project.ecr.host:
        return served_digest(host, "AWS", moto_ecr_password(), repository, ref)
    assert host == project.hub.host, reference
    return served_digest(host, project.hub.username or "", project.hub_token, repository, ref)


def test_the_parser_reads_both_forms() -> None:
    parsed = parse_github_output("a=1\nrefs<<EOF\nx\ny\nEOF\nb=2=3\n")
    assert parsed == {"a": "1", "refs": "x\ny", "b": "2=3"}
    with pytest.raises(AssertionError):
        parse_github_output("refs<<EOF\nx\n")


def test_ship_writes_outputs_summary_and_quiet_lines(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    assert project.ecr and project.hub
    outputs_file = tmp_path / "github_output"
    summary_file = tmp_path / "step_summary"
    # Earlier steps' lines stay: the files are appended to.
    outputs_file.write_text("earlier=step\n")
    env = project.env(
        GITHUB_OUTPUT=str(outputs_file),
        GITHUB_STEP_SUMMARY=str(summary_file),
        # Its own blob store: the shared one would let later tests' pushes mount these layers.
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    result = project.shipit("ship", "-q", env=env)
    assert result.code == 0, result.output

    ecr_ref = f"{project.ecr.host}/{project.ecr_repository}"
    hub_ref = f"{project.hub.host}/{project.hub_repository}"
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert result.stderr == "", result.stderr
    pinned = dict(line.split("@", 1) for line in lines)
    assert set(pinned) == {ecr_ref, hub_ref}
    digest = pinned[ecr_ref]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert pinned[hub_ref] == digest
    for line in lines:
        assert served_at(project, line) == digest

    outputs = parse_github_output(outputs_file.read_text())
    assert outputs["earlier"] == "step"
    assert outputs["digest"] == digest
    refs = outputs["refs"].splitlines()
    assert f"{ecr_ref}@{digest}" in refs and f"{hub_ref}@{digest}" in refs
    assert f"{ecr_ref}:latest" in refs and f"{hub_ref}:latest" in refs
    tagged = [ref for ref in refs if "@" not in ref]
    assert len(tagged) >= 4 and {ref.rsplit(":", 1)[0] for ref in tagged} == {ecr_ref, hub_ref}
    for ref in refs:
        assert served_at(project, ref) == digest

    summary = summary_file.read_text()
    assert summary.startswith("### shipit ship: done")
    assert f"| ecr | `{ecr_ref}`" in summary and f"| dockerhub | `{hub_ref}`" in summary
    assert summary.count(f"`{digest}`") == 2
    # No credential reaches a file GitHub shows on the run's page or hands to later steps.
    for text in (outputs_file.read_text(), summary, result.output):
        for secret in (project.hub_token, moto_ecr_password(), env["AWS_SECRET_ACCESS_KEY"]):
            assert secret not in text


def test_a_failed_push_writes_a_summary_and_no_outputs(
    publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    outputs_file = tmp_path / "github_output"
    summary_file = tmp_path / "step_summary"
    env = project.env(
        GITHUB_OUTPUT=str(outputs_file),
        GITHUB_STEP_SUMMARY=str(summary_file),
        DOCKERHUB_TOKEN="wrong-token-for-the-summary",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    result = project.shipit("ship", "-q", env=env)
    assert result.code != 0, result.output
    assert not outputs_file.exists() or "digest=" not in outputs_file.read_text()
    summary = summary_file.read_text()
    assert "failed" in summary and "dockerhub" in summary, summary
    assert "wrong-token-for-the-summary" not in summary
    # The registry that took the image is still one line on stdout; the failure is on stderr.
    assert all("@sha256:" in line for line in result.stdout.splitlines())


def _report() -> PushReport:
    ref = "registry.example.internal:5000/team/a-rather-long-repository-name"
    targets = [
        TargetReport(
            name,
            reference=f"{ref}-{name}",
            status="pushed",
            digest=DIGEST,
            tags=[TagOutcome("0123abc", "pushed", DIGEST), TagOutcome("latest", "pushed", DIGEST)],
        )
        for name in ("ecr", "dockerhub")
    ]
    return PushReport("sha256:" + "c" * 64, "b1", ("0123abc", "latest"), False, targets)


def _digest_column(table: str, index: int) -> str:
    """The text of one column of a rich table, its folded pieces joined."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", table)
    pieces = [line.split("│")[index].strip() for line in plain.splitlines() if "│" in line]
    return "".join(piece for piece in pieces if piece != "digest")


def test_the_terminal_table_keeps_the_whole_reference_and_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shipit.tables import push_table

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(Ui, "plain", property(lambda self: False))
    table = push_table(Ui(), _report())
    assert "…" not in table
    assert _digest_column(table, 3) == DIGEST * 2
    assert _digest_column(table, 2).replace("reference", "") == "".join(
        target.reference for target in _report().targets
    )
    assert max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in table.splitlines()) <= 80


def test_plain_tables_show_the_whole_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    from shipit.tables import push_table

    monkeypatch.setattr(Ui, "plain", property(lambda self: True))
    table = push_table(Ui(), _report())
    for target in _report().targets:
        assert re.search(rf"{re.escape(target.reference)} +{DIGEST} ", table), table


def test_the_summary_says_what_failed_and_hides_secrets(tmp_path: Path) -> None:
    register_secret("s3cret-registry-token")
    report = _report()
    report.targets[1].fail(PushError("login refused for s3cret-registry-token", "check it"))
    outputs, summary = tmp_path / "out", tmp_path / "summary"
    env = {"GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}
    write_step_files("push", report, "push failed for dockerhub", env)
    assert not outputs.exists()
    text = summary.read_text()
    assert "**Failed:** push failed for dockerhub" in text
    assert "| dockerhub |" in text and "failed: login refused" in text
    assert "s3cret-registry-token" not in text
    assert summary_markdown("ship", None, "smoke test failed: home").startswith(
        "### shipit ship: failed"
    )
