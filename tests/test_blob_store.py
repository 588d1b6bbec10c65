"""The blob store cannot publish a broken image, and blobs are mounted across repositories.

The store's own checks (unit tests), then pushes by shipit's own upload on the local classic
engine, through a fault proxy in front of a real registry, each image judged by outside
clients: skopeo copies it (checking every blob's digest) and umoci unpacks it (checking
every layer against the config's diff_ids).
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.faultproxy import FaultProxy, Seen
from harness.services import RegistryService
from harness.targets import oci_registry, target_of
from shipit.progress import quiet
from shipit.push.blobs import Blob, BlobStore
from shipit.push.compress import BLOB_FORMAT, gzip_blocks, read_blocks
from shipit.push.image import PushImage
from shipit.push.image_blobs import ImageBlobs
from shipit.push.upload import upload_image
from shipit.registries import diagnosis
from shipit.registries.credentials import Credentials
from shipit.tags import PlannedTag, TagPlan
from tests.conftest import HUB_USER, Project, Result
from tests.leftovers import shipit_uploads
from tests.test_blobs import ExportingEngine, digest_of, sample, save_archive
from tests.test_publish import registries, report_of

# -- the store's checks -------------------------------------------------------------------


def gzipped(data: bytes) -> bytes:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return b"".join(gzip_blocks(read_blocks(io.BytesIO(data)), pool))


def two_kept_layers(store: BlobStore) -> tuple[tuple[str, Blob], tuple[str, Blob]]:
    found = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for seed in (1, 2):
            layer = sample(4000, seed=seed)
            found.append((digest_of(layer), store.keep_layer(digest_of(layer), layer, pool)))
    return found[0], found[1]


def learned(store: BlobStore) -> dict[str, Any]:
    return json.loads((store.directory / "layers.json").read_text())[BLOB_FORMAT]  # type: ignore[no-any-return]


def write_learned(store: BlobStore, entries: dict[str, Any]) -> None:
    (store.directory / "layers.json").write_text(json.dumps({BLOB_FORMAT: entries}))


def test_swapped_entries_are_dropped_and_learned_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    (first, first_blob), (second, _second_blob) = two_kept_layers(store)
    entries = learned(store)
    entries[first], entries[second] = entries[second], entries[first]
    write_learned(store, entries)
    assert store.layer(first) is None
    assert store.layer(second) is None
    store.learn(first, Blob(first_blob.digest, first_blob.size))
    assert learned(store).keys() == {first}  # the swapped entry is gone from the file too
    assert store.layer(first) == first_blob  # kept, and checked against its layer


def test_an_edited_or_unchecked_entry_is_dropped(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    (first, _), (second, second_blob) = two_kept_layers(store)
    entries = learned(store)
    entries[first]["digest"] = second_blob.digest
    del entries[second]["check"]  # as written before entries were checked
    write_learned(store, entries)
    assert store.layer(first) is None
    assert store.layer(second) is None


def test_a_map_in_which_two_layers_share_a_blob_is_discarded_whole(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    (first, _), (second, second_blob) = two_kept_layers(store)
    other = "sha256:" + "7" * 64
    store.learn(other, Blob("sha256:" + "8" * 64, 9))
    entries = learned(store)
    # The other layer's entry, its check made for this very claim: still not trusted.
    probe = BlobStore(tmp_path / "probe")
    probe.learn(first, Blob(second_blob.digest, second_blob.size))
    entries[first] = learned(probe)[first]
    write_learned(store, entries)
    assert [store.layer(d) for d in (first, second, other)] == [None, None, None]


def test_learning_a_blob_drops_another_layers_claim_on_it(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = Blob("sha256:" + "2" * 64, 10)
    store.learn("sha256:" + "1" * 64, blob)
    store.learn("sha256:" + "3" * 64, blob)
    assert learned(store).keys() == {"sha256:" + "3" * 64}


def test_a_kept_layer_damaged_at_the_same_size_is_not_used(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    (diff_id, blob), _ = two_kept_layers(store)
    assert blob.path is not None
    data = bytearray(blob.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.path.write_bytes(bytes(data))
    assert store.layer(diff_id) == Blob(blob.digest, blob.size)  # known, no longer kept
    assert not blob.path.exists()
    layer = sample(4000, seed=1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert store.keep_layer(diff_id, layer, pool) == blob  # made again
    assert gzip.decompress(blob.path.read_bytes()) == layer


def test_a_kept_blob_of_another_layer_is_not_used_for_this_one(tmp_path: Path) -> None:
    """Its bytes hash to its name, but inflate to another layer than the entry says."""
    store = BlobStore(tmp_path)
    (first, _first_blob), (_second, second_blob) = two_kept_layers(store)
    store.learn(first, second_blob)  # a wrong claim, well formed
    assert store.layer(first) is None
    assert learned(store).keys() == set()  # the wrong entry goes, and second's with it
    assert second_blob.path is not None and second_blob.path.exists()


def test_keep_writes_a_damaged_file_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    config = b'{"architecture":"amd64"}'
    kept = store.keep(config)
    assert kept.path is not None
    kept.path.write_bytes(b'{"architecture":"arm64"}')
    store.keep(config)
    assert store.kept(kept.digest) == config


def test_the_repositories_holding_a_blob_are_remembered_bounded_and_damage_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipit.push import blobs

    monkeypatch.setattr(blobs, "HOLDER_BLOBS", 3)
    monkeypatch.setattr(blobs, "HOLDER_REPOSITORIES", 2)
    store = BlobStore(tmp_path)
    digest = "sha256:" + "a" * 64
    assert store.holders(digest, "r.example") == []
    for repository in ("team/one", "team/two", "team/three", "team/two"):
        store.learn_holder(digest, "r.example", repository)
    assert store.holders(digest, "r.example") == ["team/two", "team/three"]
    assert store.holders(digest, "other.example") == []
    for index in range(4):
        store.learn_holder("sha256:" + str(index) * 64, "r.example", "team/one")
    assert store.holders(digest, "r.example") == []  # the least recent blob is forgotten
    assert (tmp_path / "repositories.json").stat().st_mode & 0o777 == 0o600

    file = tmp_path / "repositories.json"
    file.write_text('{"sha256:' + "b" * 64 + '": {"r.example": ["team/x", 3]}, "x": 1, "y": []}')
    assert store.holders("sha256:" + "b" * 64, "r.example") == ["team/x"]
    file.write_text("[not json")
    assert store.holders("sha256:" + "b" * 64, "r.example") == []
    store.learn_holder(digest, "r.example", "team/one")  # a damaged file is replaced
    assert store.holders(digest, "r.example") == ["team/one"]


def test_a_layer_the_export_made_as_another_blob_is_put_again_before_the_manifest(
    tmp_path: Path, hub_registry: RegistryService, hub_token: str
) -> None:
    """The store claims that the base layer compresses to the site layer's blob (no file
    kept, and the registry holds that blob): the export this push makes for the site layer
    tells otherwise, and the manifest names the blob the export made."""
    base, site = sample(3000, seed=1), sample(5000, seed=2)
    layers = (digest_of(base), digest_of(site))
    rootfs = {"type": "layers", "diff_ids": list(layers)}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()
    image_id = digest_of(config)
    store = BlobStore(tmp_path)
    wrong = gzipped(site)
    store.learn(digest_of(base), Blob(digest_of(wrong), len(wrong)))
    repository = repository_name("settled")
    target = target_of(
        oci_registry(), hub_registry.host, repository, Credentials(HUB_USER, hub_token)
    )
    target.client.upload_blob(repository, digest_of(wrong), io.BytesIO(wrong), len(wrong))
    archive = {f"{image_id[7:]}.json": config, "1/layer.tar": base, "2/layer.tar": site}
    engine = ExportingEngine(save_archive(archive))
    plan = TagPlan((PlannedTag("1", "1", moving=False),), ())
    image = PushImage(id=image_id, build_id="", labels={}, layers=layers, tags=plan)
    blobs = ImageBlobs(engine, image_id, layers, store, 30.0)  # type: ignore[arg-type]
    try:
        upload_image(target, image, blobs, quiet)
    finally:
        blobs.close()
    served = target.client.get_manifest(repository, "1")
    digests = [layer["digest"] for layer in served.content["layers"]]
    assert digests == [digest_of(gzipped(base)), digest_of(gzipped(site))]
    assert store.layer(digest_of(base)) == Blob(
        digest_of(gzipped(base)), len(gzipped(base)), store.path_of(digest_of(gzipped(base)))
    )


def test_an_upload_is_named_in_errors_without_the_registrys_upload_state() -> None:
    state = "_state=" + "Zm9v" * 80
    url = f"http://127.0.0.1:5000/v2/team/site/blobs/uploads/8d3c-11ef?{state}"
    named = diagnosis._request_name(f"PUT {url}&digest=sha256:{'ab' * 32}")
    assert named == "PUT of the blob upload for sha256:abababababab… to team/site"
    assert diagnosis._request_name(f"PATCH {url}") == "PATCH of the blob upload to team/site"
    assert (
        diagnosis._request_name("GET /v2/team/site/manifests/1") == "GET /v2/team/site/manifests/1"
    )


# -- pushes through a proxy in front of a real registry -----------------------------------


@dataclass
class Pusher:
    """A project on a one-file base, pushed by shipit's own upload to the Docker Hub stand-in
    through a fault proxy, with a blob store of its own."""

    project: Project
    base: str
    proxy: FaultProxy
    registry: RegistryService
    token: str
    cache: Path
    work: Path

    @property
    def store(self) -> BlobStore:
        return BlobStore(self.cache / "shipit" / "blobs")

    def env(self, repository: str) -> dict[str, str]:
        return self.project.env(
            SHIPIT_BASE_IMAGE=self.base,
            SHIPIT_DOCKERHUB_REGISTRY=self.proxy.host,
            SHIPIT_DOCKERHUB_REPOSITORY=repository,
            DOCKERHUB_USERNAME=HUB_USER,
            DOCKERHUB_TOKEN=self.token,
            SHIPIT_PUSH_ATTEMPTS="1",
            XDG_CACHE_HOME=str(self.cache),
        )

    def build(self) -> dict[str, Any]:
        """A build of new site content: a new site layer, which the build keeps."""
        with self.project.site_toml.open("a") as data:
            data.write(f'\nnonce_{uuid.uuid4().hex} = "new content"\n')
        built = self.project.shipit("build", "--json", env=self.env("unused"))
        assert built.code == 0, built.output
        document: dict[str, Any] = json.loads(built.stdout)
        return document

    def push(self, repository: str) -> Result:
        return self.project.shipit(
            "push", "--to", "dockerhub", "--skip-smoke", "--json", env=self.env(repository)
        )

    def pushed(self, repository: str) -> dict[str, Any]:
        result = self.push(repository)
        assert result.code == 0, result.output
        assert "_state" not in result.output
        entry: dict[str, Any] = registries(report_of(result))["dockerhub"]
        assert entry["status"] == "pushed", result.output
        return entry | {"stderr": result.stderr, "tag": report_of(result)["tags"][0]}

    def assert_pullable(self, repository: str, tag: str) -> None:
        """skopeo copies the image out of the registry (every blob's digest checked), umoci
        unpacks it (every layer's content checked against the config's diff_ids)."""
        name = uuid.uuid4().hex[:8]
        layout, bundle = self.work / f"oci-{name}", self.work / f"bundle-{name}"
        copied = subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--src-creds",
                f"{HUB_USER}:{self.token}",
                f"docker://{self.registry.host}/{repository}:{tag}",
                f"oci:{layout}:{tag}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert copied.returncode == 0, copied.stderr
        unpacked = subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert unpacked.returncode == 0, unpacked.stderr
        assert (bundle / "rootfs" / "etc" / "shipit-tiny-base").exists()

    def requests_since(self, mark: int) -> list[Seen]:
        return self.proxy.seen()[mark:]


@pytest.fixture
def pusher(
    project: Project,
    tmp_path: Path,
    hub_registry: RegistryService,
    hub_token: str,
    tiny_base: str,
) -> Iterator[Pusher]:
    # make test runs this file on the local classic engine only, where shipit uploads.
    assert shipit_uploads(), "shipit uploads only on a local engine with the classic store"
    with FaultProxy("127.0.0.1", hub_registry.port) as proxy:
        yield Pusher(
            project, tiny_base, proxy, hub_registry, hub_token, tmp_path / "cache", tmp_path
        )


def repository_name(label: str) -> str:
    return f"store/{label}-{uuid.uuid4().hex[:8]}"


def kept_file(store: BlobStore, diff_id: str) -> Path:
    blob = store.layer(diff_id)
    assert blob is not None and blob.path is not None, "the build keeps the site's layer"
    return blob.path


def test_swapped_layer_entries_still_publish_a_correct_image(pusher: Pusher) -> None:
    built = pusher.build()
    first = pusher.pushed(repository_name("first"))
    layers_file = pusher.store.directory / "layers.json"
    document = json.loads(layers_file.read_text())
    entries = document[BLOB_FORMAT]
    right = dict(entries)
    base, site = list(entries)
    assert len(entries) == 2
    entries[base], entries[site] = entries[site], entries[base]
    layers_file.write_text(json.dumps(document))

    second_repository = repository_name("second")
    second = pusher.pushed(second_repository)
    pusher.assert_pullable(second_repository, second["tag"])
    # The map is whole again: a later push is as correct as the first.
    assert json.loads(layers_file.read_text())[BLOB_FORMAT] == right
    third_repository = repository_name("third")
    third = pusher.pushed(third_repository)
    pusher.assert_pullable(third_repository, third["tag"])
    assert first["digest"] == second["digest"] == third["digest"]
    assert built["image_id"]


def test_a_kept_site_layer_damaged_at_the_same_size_is_made_again(pusher: Pusher) -> None:
    repository = repository_name("damaged")
    pusher.build()
    pusher.pushed(repository)
    built = pusher.build()  # an edit: a new site layer, kept by the build
    site_layer = kept_file(pusher.store, built_layers(pusher, built)[-1])
    data = bytearray(site_layer.read_bytes())
    data[len(data) // 2] ^= 0x01
    site_layer.write_bytes(bytes(data))

    pushed = pusher.pushed(repository)
    assert "DIGEST_INVALID" not in pushed["stderr"]
    assert pushed["bytes_uploaded"] == site_layer.stat().st_size
    assert digest_of(site_layer.read_bytes()) == "sha256:" + site_layer.name  # kept, whole
    pusher.assert_pullable(repository, pushed["tag"])


def built_layers(pusher: Pusher, built: dict[str, Any]) -> list[str]:
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", built["image_id"]],
        capture_output=True,
        text=True,
        check=True,
    )
    layers: list[str] = json.loads(inspected.stdout)
    return layers


def test_a_registry_refusing_a_kept_blob_gets_it_from_the_export(pusher: Pusher) -> None:
    repository = repository_name("refused")
    pusher.build()
    pusher.pushed(repository)
    pusher.build()
    # The site layer's upload is changed on the way: the registry answers DIGEST_INVALID.
    pusher.proxy.set_mode("corrupt-upload", count=1, match=r"^PATCH ")
    pushed = pusher.pushed(repository)
    assert pusher.proxy.seen("corrupt")
    refusals = [line for line in pushed["stderr"].splitlines() if "DIGEST_INVALID" in line]
    assert len(refusals) == 1 and "export" in refusals[0], pushed["stderr"]
    pusher.assert_pullable(repository, pushed["tag"])

    # Every upload changed on the way: one line, with what to do, and no upload state.
    pusher.build()
    pusher.proxy.set_mode("corrupt-upload", match=r"^PATCH ")
    failed = pusher.push(repository)
    assert failed.code != 0
    error = json.loads(failed.stdout)["error"]
    line = f"{error['message']} {error.get('hint') or ''}"
    assert "DIGEST_INVALID" in line and "push again" in line and "\n" not in line
    assert "_state" not in failed.output and "/blobs/uploads/" not in failed.output
    assert len(error["message"]) < 250, error["message"]


def mounts(seen: list[Seen], repository: str) -> list[str]:
    return [
        entry.path.split("mount=", 1)[1].split("&", 1)[0]
        for entry in seen
        if entry.method == "POST"
        and entry.path.startswith(f"/v2/{repository}/")
        and "mount=" in entry.path
    ]


def patches(seen: list[Seen], repository: str) -> list[Seen]:
    return [s for s in seen if s.method == "PATCH" and s.path.startswith(f"/v2/{repository}/")]


def test_a_second_repository_of_the_registry_mounts_the_layers(pusher: Pusher) -> None:
    built = pusher.build()
    first = repository_name("mount-from")
    pusher.pushed(first)
    layer_digests = [
        blob.digest for blob in map(pusher.store.layer, built_layers(pusher, built)) if blob
    ]
    assert len(layer_digests) == 2

    second = repository_name("mount-to")
    mark = len(pusher.proxy.seen())
    pushed = pusher.pushed(second)
    seen = pusher.requests_since(mark)
    assert mounts(seen, second) == layer_digests
    assert len(patches(seen, second)) == 1  # the config's: no layer is uploaded
    assert pushed["bytes_uploaded"] == 0
    assert f"mounted from {first}" in pushed["stderr"]
    pusher.assert_pullable(second, pushed["tag"])

    # A registry that declines the mount (202: it does not find the blob in that repository)
    # opens an upload session, and the layer is uploaded there.
    for digest in layer_digests:
        pusher.store.learn_holder(digest, pusher.proxy.host, "store/holds-nothing")
    third = repository_name("declined")
    mark = len(pusher.proxy.seen())
    declined = pusher.pushed(third)
    seen = pusher.requests_since(mark)
    assert mounts(seen, third) == layer_digests
    starts = [s for s in seen if s.method == "POST" and s.path.startswith(f"/v2/{third}/")]
    assert len(starts) == 3  # two declined mounts, one upload for the config
    assert len(patches(seen, third)) == 3
    assert declined["bytes_uploaded"] > 0
    pusher.assert_pullable(third, declined["tag"])


def test_a_mount_on_a_token_registry_asks_for_the_pull_of_the_source(
    project: Project, tmp_path: Path, tiny_base: str, hub_token: str
) -> None:
    assert shipit_uploads(), "shipit uploads only on a local engine with the classic store"
    with (
        RegistryService(auth="token", username=HUB_USER, password=hub_token) as registry,
        FaultProxy("127.0.0.1", registry.port) as proxy,
    ):
        pusher = Pusher(project, tiny_base, proxy, registry, hub_token, tmp_path / "c", tmp_path)
        pusher.build()
        first, second = repository_name("bearer-from"), repository_name("bearer-to")
        pusher.pushed(first)
        pushed = pusher.pushed(second)
        assert pushed["bytes_uploaded"] == 0
        assert f"mounted from {first}" in pushed["stderr"]
        assert registry.token_service is not None
        # Distribution words a challenge's actions in any order ("push,pull" as well).
        asked = [
            {
                (scope.rsplit(":", 1)[0], frozenset(scope.rsplit(":", 1)[1].split(",")))
                for scope in request.scopes
            }
            for request in registry.token_service.requests
        ]
        wanted = {
            (f"repository:{second}", frozenset({"pull", "push"})),
            (f"repository:{first}", frozenset({"pull"})),
        }
        assert any(wanted <= scopes for scopes in asked), asked
        pusher.assert_pullable(second, pushed["tag"])
