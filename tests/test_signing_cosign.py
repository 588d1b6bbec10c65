"""Signed ships, judged by cosign (Debian trixie's 2.5.0, scripts/engines.sh): a PEM key, a
cosign.key and a KMS key in moto sign the image in both loopback registries, and `cosign
verify` / `cosign verify-attestation` accept what shipit pushed, offline."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.registry_reader import RegistryReader
from harness.services import moto_ecr_password
from shipit.attest.statement import SLSA_PROVENANCE_V1, SMOKE_TEST_V1, SPDX_DOCUMENT
from shipit.engine import Engine
from shipit.errors import ExitCode
from tests.conftest import HUB_USER, PublishProject

COSIGN = Path(
    os.environ.get("SHIPIT_COSIGN", "/var/tmp/shipit-testenv/trixie/cosign/usr/bin/cosign")
)
PASSWORD = "correct horse battery"
# What a ship attests, as cosign's --type names them.
SHIP_TYPES = ["slsaprovenance1", "spdxjson", SMOKE_TEST_V1]
TYPE_URIS = {"slsaprovenance1": SLSA_PROVENANCE_V1, "spdxjson": SPDX_DOCUMENT}


@pytest.fixture(scope="module")
def cosign() -> Path:
    if not COSIGN.exists():
        pytest.fail(f"no cosign at {COSIGN}: run `bash scripts/engines.sh up cosign`")
    return COSIGN


def pem_key_pair(folder: Path, passphrase: str | None = None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    private = folder / "signing.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    public = folder / "signing.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def cosign_key_pair(cosign: Path, folder: Path) -> tuple[Path, Path]:
    subprocess.run(
        [str(cosign), "generate-key-pair"],
        cwd=folder,
        env={**os.environ, "COSIGN_PASSWORD": PASSWORD},
        capture_output=True,
        check=True,
        timeout=60,
    )
    return folder / "cosign.key", folder / "cosign.pub"


def docker_config(project: PublishProject, folder: Path) -> Path:
    """A DOCKER_CONFIG folder whose config.json logs cosign in to both registries."""
    assert project.ecr and project.hub
    auths = {
        project.ecr.host: f"AWS:{moto_ecr_password()}",
        project.hub.host: f"{HUB_USER}:{project.hub_token}",
    }
    config = folder / "docker-config"
    config.mkdir(exist_ok=True)
    (config / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    h: {"auth": base64.b64encode(a.encode()).decode()} for h, a in auths.items()
                }
            }
        )
    )
    return config


def run_cosign(cosign: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(cosign),
            *args,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--allow-insecure-registry",
        ],
        env={**os.environ, "DOCKER_CONFIG": str(config), "SIGSTORE_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pinned_references(report: dict[str, Any]) -> list[str]:
    push = report.get("push", report)
    return [f"{entry['reference']}@{entry['digest']}" for entry in push["registries"]]


def assert_cosign_accepts(
    cosign: Path, config: Path, public: str, references: list[str], types: list[str]
) -> None:
    for reference in references:
        verified = run_cosign(cosign, config, "verify", "--key", public, reference)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.strip(), verified.stderr
        claims = json.loads(verified.stdout.strip().splitlines()[0])
        digest = reference.rsplit("@", 1)[1]
        assert claims[0]["critical"]["image"]["docker-manifest-digest"] == digest
        for kind in types:
            attested = run_cosign(
                cosign, config, "verify-attestation", "--key", public, "--type", kind, reference
            )
            assert attested.returncode == 0, attested.stderr
            envelope = json.loads(attested.stdout.splitlines()[0])
            statement = json.loads(base64.b64decode(envelope["payload"]))
            assert statement["predicateType"] == TYPE_URIS.get(kind, kind)
            named = [subject["digest"]["sha256"] for subject in statement["subject"]]
            assert digest.removeprefix("sha256:") in named


def tags_of(project: PublishProject) -> dict[str, dict[str, str | None]]:
    """Every tag of both repositories and the digest it names."""
    assert project.ecr and project.hub
    found: dict[str, dict[str, str | None]] = {}
    for host, user, password, repository in (
        (project.ecr.host, "AWS", moto_ecr_password(), project.ecr_repository),
        (project.hub.host, HUB_USER, project.hub_token, project.hub_repository),
    ):
        with RegistryReader(host, user, password) as reader:
            tags = reader.tags(repository)
            found[host] = {tag: reader.manifest_digest(repository, tag) for tag in tags}
    return found


def test_a_pem_key_signs_both_registries_and_cosign_verifies(
    engine: Engine, publish_project: PublishProject, cosign: Path, tmp_path: Path
) -> None:
    project = publish_project
    private, public = pem_key_pair(tmp_path, passphrase=PASSWORD)
    env = project.env(SHIPIT_SIGNING_KEY=str(private), SHIPIT_SIGNING_PASSWORD=PASSWORD)
    result = project.shipit("ship", "--json", env=env)
    assert result.code == 0, result.output
    assert PASSWORD not in result.output
    report = json.loads(result.stdout)
    for entry in report["push"]["registries"]:
        assert entry["signed_by"].startswith("sha256:")
        assert entry["signatures"] == [
            {
                "digest": entry["digest"],
                "signed": True,
                "attested": [SLSA_PROVENANCE_V1, SPDX_DOCUMENT, SMOKE_TEST_V1],
            }
        ]
    config = docker_config(project, tmp_path)
    references = pinned_references(report)
    assert_cosign_accepts(cosign, config, str(public), references, SHIP_TYPES)

    # The smoke predicate says what ran: this image, every check passed.
    attested = run_cosign(
        cosign,
        config,
        "verify-attestation",
        "--key",
        str(public),
        "--type",
        SMOKE_TEST_V1,
        references[0],
    )
    statement = json.loads(base64.b64decode(json.loads(attested.stdout.splitlines()[0])["payload"]))
    predicate = statement["predicate"]
    assert predicate["passed"] is True
    assert predicate["image"]["configDigest"] == report["build"]["image_id"]
    assert predicate["image"]["digest"] == references[0].rsplit("@", 1)[1]
    assert predicate["checks"] and all(check["passed"] for check in predicate["checks"])

    # shipit verify says the same, and that this digest passed its smoke test.
    verify_env = {**project.env(), "DOCKER_CONFIG": str(config)}
    for reference in references:
        verified = project.shipit(
            "verify", reference, "--key", str(public), "--type", "smoke", "--json", env=verify_env
        )
        assert verified.code == 0, verified.output
        document = json.loads(verified.stdout)
        assert document["ok"] is True and document["smoke_tested"] is True
        assert document["digests"][0]["attested"] == [
            SLSA_PROVENANCE_V1,
            SPDX_DOCUMENT,
            SMOKE_TEST_V1,
        ]
    _, other = pem_key_pair(tmp_path / "other")
    refused = project.shipit("verify", references[0], "--key", str(other), "--json", env=verify_env)
    assert refused.code == ExitCode.UNVERIFIED, refused.output
    assert "no signature by this key" in json.loads(refused.stdout)["error"]["message"]
    missing_type = project.shipit(
        "verify",
        references[0],
        "--key",
        str(public),
        "--type",
        "https://example.com/none",
        env=verify_env,
    )
    assert missing_type.code == ExitCode.UNVERIFIED, missing_type.output

    # A no-change ship signs and uploads nothing again.
    before = tags_of(project)
    again = project.shipit("ship", "--json", env=env)
    assert again.code == 0, again.output
    for entry in json.loads(again.stdout)["push"]["registries"]:
        assert entry["signatures"] == [{"digest": entry["digest"], "signed": False, "attested": []}]
    assert tags_of(project) == before


def test_a_cosign_key_signs_and_cosign_verifies(
    engine: Engine, publish_project: PublishProject, cosign: Path, tmp_path: Path
) -> None:
    project = publish_project
    private, public = cosign_key_pair(cosign, tmp_path)
    env = project.env(COSIGN_PASSWORD=PASSWORD)
    result = project.shipit("ship", "--json", "--signing-key", str(private), env=env)
    assert result.code == 0, result.output
    assert PASSWORD not in result.output
    config = docker_config(project, tmp_path)
    assert_cosign_accepts(
        cosign, config, str(public), pinned_references(json.loads(result.stdout)), SHIP_TYPES
    )


def test_a_kms_key_in_moto_signs_and_cosign_verifies(
    engine: Engine, publish_project: PublishProject, cosign: Path, tmp_path: Path
) -> None:
    project = publish_project
    assert project.moto
    kms = project.moto.client("kms")
    key_id = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    alias = f"alias/shipit-{project.ecr_repository}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    public = tmp_path / "kms.pub"
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    public.write_bytes(
        serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = project.shipit(
        "ship", "--json", env=project.env(SHIPIT_SIGNING_KEY=f"awskms:///{alias}")
    )
    assert result.code == 0, result.output
    config = docker_config(project, tmp_path)
    references = pinned_references(json.loads(result.stdout))
    assert_cosign_accepts(cosign, config, str(public), references, [SMOKE_TEST_V1])
    verified = project.shipit(
        "verify",
        references[1],
        "--key",
        f"awskms:///{alias}",
        "--type",
        "smoke",
        env={**project.env(), "DOCKER_CONFIG": str(config)},
    )
    assert verified.code == 0, verified.output

    # A key that does not sign, and one that does not exist: one line each, nothing pushed.
    encrypting = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")
    for key, needs in (
        (encrypting["KeyMetadata"]["KeyId"], "not SIGN_VERIFY"),
        ("alias/shipit-no-such-key", "alias/shipit-no-such-key"),
    ):
        refused = project.shipit(
            "push", "--json", env=project.env(SHIPIT_SIGNING_KEY=f"awskms:///{key}")
        )
        assert refused.code == ExitCode.SIGNING, refused.output
        assert needs in json.loads(refused.stdout)["error"]["message"]
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_a_wrong_passphrase_moves_no_tag(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    first = project.shipit("ship", "--json")
    assert first.code == 0, first.output
    before = tags_of(project)
    private, _ = pem_key_pair(tmp_path, passphrase=PASSWORD)
    (project.root / "site" / "static" / "changed.txt").write_text("another build\n")
    wrong = "Tr0ub4dor&3-not-it"
    env = project.env(SHIPIT_SIGNING_KEY=str(private), SHIPIT_SIGNING_PASSWORD=wrong)
    result = project.shipit("ship", "--json", env=env)
    assert result.code == ExitCode.SIGNING, result.output
    assert (
        "the passphrase in SHIPIT_SIGNING_PASSWORD is wrong"
        in json.loads(result.stdout)["error"]["message"]
    )
    assert wrong not in result.output
    assert tags_of(project) == before


@pytest.mark.parametrize(
    ("make", "needs"),
    [
        ("rsa", "RSA key"),
        ("garbage", "not a PEM private key"),
        ("public", "is a public key"),
        ("missing", "cannot read"),
        ("p384", "curve secp384r1"),
        ("cosign-no-password", "COSIGN_PASSWORD is not set"),
        ("cosign-wrong-password", "the password in COSIGN_PASSWORD is wrong"),
        ("pem-no-passphrase", "SHIPIT_SIGNING_PASSWORD is not set"),
    ],
)
def test_bad_signing_keys_fail_in_one_line_before_anything_is_built(
    engine: Engine,
    publish_project: PublishProject,
    cosign: Path,
    tmp_path: Path,
    make: str,
    needs: str,
) -> None:
    project = publish_project
    key = tmp_path / "key.pem"
    env = project.env(SHIPIT_SIGNING_KEY=str(key))
    if make == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key.write_bytes(
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif make == "garbage":
        key.write_text("not a key\n")
    elif make == "public":
        _, public = pem_key_pair(tmp_path)
        env["SHIPIT_SIGNING_KEY"] = str(public)
    elif make == "p384":
        other = ec.generate_private_key(ec.SECP384R1())
        key.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif make.startswith("cosign-"):
        private, _ = cosign_key_pair(cosign, tmp_path)
        env["SHIPIT_SIGNING_KEY"] = str(private)
        if make == "cosign-wrong-password":
            env["COSIGN_PASSWORD"] = "not-" + PASSWORD
    elif make == "pem-no-passphrase":
        private, _ = pem_key_pair(tmp_path, passphrase=PASSWORD)
        env["SHIPIT_SIGNING_KEY"] = str(private)
    result = project.shipit("push", "--json", "--skip-smoke", env=env)
    assert result.code == ExitCode.SIGNING, result.output
    document = json.loads(result.stdout)
    assert needs in document["error"]["message"]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "PRIVATE KEY" not in result.output
    assert PASSWORD not in result.output


def test_a_two_platform_ship_signs_the_index_and_each_platform(
    engine: Engine,
    publish_project: PublishProject,
    multi_platform_base: Any,
    cosign: Path,
    tmp_path: Path,
) -> None:
    project = publish_project
    private, public = pem_key_pair(tmp_path)
    env = project.env(
        SHIPIT_SIGNING_KEY=str(private),
        SHIPIT_BASE_IMAGE=multi_platform_base.reference,
        SHIPIT_PLATFORMS="linux/amd64,linux/arm64",
    )
    result = project.shipit("ship", "--json", env=env, timeout=600)
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    config = docker_config(project, tmp_path)
    for entry in report["push"]["registries"]:
        signed = [each["digest"] for each in entry["signatures"]]
        assert len(signed) == 3 and signed[-1] == entry["digest"]
        # The index holds every platform's SBOM and smoke test, and the provenance once.
        assert sorted(entry["signatures"][-1]["attested"]) == sorted(
            [SLSA_PROVENANCE_V1, SPDX_DOCUMENT, SPDX_DOCUMENT, SMOKE_TEST_V1, SMOKE_TEST_V1]
        )
        references = [f"{entry['reference']}@{digest}" for digest in signed]
        assert_cosign_accepts(cosign, config, str(public), references, SHIP_TYPES)
    verified = project.shipit(
        "verify",
        pinned_references(report)[0],
        "--key",
        str(public),
        "--json",
        env={**project.env(), "DOCKER_CONFIG": str(config)},
    )
    assert verified.code == 0, verified.output
    platforms = [each["platform"] for each in json.loads(verified.stdout)["digests"]]
    assert platforms[0] is None and len(platforms) == 3

    # Again: the index and both manifests are found signed; nothing is signed or uploaded.
    before = tags_of(project)
    again = project.shipit("ship", "--json", env=env, timeout=600)
    assert again.code == 0, again.output
    for entry in json.loads(again.stdout)["push"]["registries"]:
        assert [each["signed"] for each in entry["signatures"]] == [False, False, False]
    assert tags_of(project) == before


def test_doctor_checks_the_signing_key_first_and_shows_no_secret(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    project = publish_project
    private, _ = pem_key_pair(tmp_path, passphrase=PASSWORD)
    env = project.env(SHIPIT_SIGNING_KEY=str(private), SHIPIT_SIGNING_PASSWORD=PASSWORD)
    good = project.shipit("doctor", "--json", env=env)
    first = json.loads(good.stdout)["checks"][0]
    assert first["name"] == "signing key" and first["outcome"] == "ok", good.output
    assert "signs (key sha256:" in first["detail"]
    env["SHIPIT_SIGNING_PASSWORD"] = "not-" + PASSWORD
    bad = project.shipit("doctor", "--json", env=env)
    assert bad.code == ExitCode.DOCTOR, bad.output
    first = json.loads(bad.stdout)["checks"][0]
    assert first["outcome"] == "fail" and "passphrase" in first["detail"]
    assert PASSWORD not in bad.output and "PRIVATE KEY" not in bad.output


def test_a_registry_that_refuses_the_signature_tag_gets_no_tag(
    engine: Engine, publish_project: PublishProject, tmp_path: Path
) -> None:
    from harness.faultproxy import FaultProxy

    project = publish_project
    assert project.hub
    private, _ = pem_key_pair(tmp_path)
    with FaultProxy("127.0.0.1", project.hub.port) as proxy:
        proxy.set_mode("403", match=r"^PUT /v2/.*/manifests/sha256-[0-9a-f]{64}\.sig$")
        env = project.env(
            SHIPIT_SIGNING_KEY=str(private),
            SHIPIT_DOCKERHUB_REGISTRY=proxy.host,
            SHIPIT_TAGS="{sha},latest",
        )
        result = project.shipit("ship", "--json", env=env)
    assert result.code == ExitCode.SIGNING, result.output
    error = json.loads(result.stdout)["error"]
    assert ".sig" in error["message"] and "refused" in error["message"]
    hub_tags = tags_of(project)[project.hub.host]
    # The image is there by digest, its attestation beside it, and no tag names it.
    assert not [tag for tag in hub_tags if not tag.startswith("sha256-")], hub_tags
    assert not [tag for tag in hub_tags if tag.endswith(".sig")], hub_tags
    assert "latest" not in tags_of(project)[project.ecr.host if project.ecr else ""]


def test_an_engine_push_is_signed_before_any_other_tag_moves(
    engine: Engine, publish_project: PublishProject, cosign: Path, tmp_path: Path
) -> None:
    """uploader = "engine": the engine names the first tag itself; the signature follows it
    before `latest` or any other tag moves."""
    project = publish_project
    private, public = pem_key_pair(tmp_path)
    env = project.env(SHIPIT_SIGNING_KEY=str(private), SHIPIT_UPLOADER="engine")
    result = project.shipit("ship", "--json", env=env)
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    for entry in report["push"]["registries"]:
        assert entry["signatures"][0]["signed"] is True
    config = docker_config(project, tmp_path)
    assert_cosign_accepts(cosign, config, str(public), pinned_references(report), SHIP_TYPES)
