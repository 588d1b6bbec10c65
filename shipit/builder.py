"""Who makes the image, and why: shipit writes it itself (assemble.py: the base image's
layers and one layer of the site, loaded into the engine) when the Dockerfile, the engine's
image store and the base image allow it, else `docker build` does. What a build changes in the
engine (tags, new images) is put back unless the build completes (undone_unless_complete).
pipeline.build calls both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipit import interrupts
from shipit.base_image import BaseImage
from shipit.config import Settings
from shipit.errors import EngineError, PreconditionError
from shipit.labels import (
    BUILT_BY_DOCKER,
    BUILT_BY_SHIPIT,
    LABEL_BASE_IMAGE_ID,
    LABEL_BUILDER,
    LABEL_CREATED,
)
from shipit.progress import Progress

if TYPE_CHECKING:
    from shipit.assemble import Recipe
    from shipit.engine import Engine
    from shipit.platforms import Platform
    from shipit.render import RenderedSite


class Undo:
    """What a build has changed in the engine so far: the tags it may move (each with the
    image it named before, if any) and the images that were new to the engine."""

    def __init__(self, engine: Engine, tags: list[str]) -> None:
        self.engine = engine
        self.tags = {reference: engine.image(reference) for reference in tags}
        self.made: list[str] = []

    def run(self) -> None:
        for reference, before in self.tags.items():
            if before is None:
                self.engine.untag(reference)
            else:
                self.engine.tag(before.id, *reference.rsplit(":", 1))
        self.engine.remove_images(self.made)


@contextlib.contextmanager
def undone_unless_complete(engine: Engine, tags: list[str]) -> Iterator[Undo]:
    """The block's changes to the engine, put back when it does not end: a failure or an
    interrupt leaves every tag where it was and no new image. What the undo meets on its way
    (an engine that went away) is not the error to report."""
    undo = Undo(engine, tags)
    try:
        yield undo
    except BaseException:
        with interrupts.deferred(), contextlib.suppress(EngineError):
            undo.run()
        raise


@dataclass(frozen=True)
class BaseFacts:
    image_store: str
    document: dict[str, Any]
    history: list[dict[str, Any]]


def base_facts_started(
    settings: Settings, engine: Engine, base: BaseImage
) -> Callable[[], BaseFacts | None]:
    """Starts asking the engine what writing the image needs (None with builder = docker);
    the answer, or the engine's error, comes from the returned function."""
    if settings.builder != "auto":
        return lambda: None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="base-facts")
    future = pool.submit(
        lambda: BaseFacts(
            engine.image_store(),
            engine.image_document(base.image_id),
            engine.image_history(base.image_id),
        )
    )
    pool.shutdown(wait=False)
    return future.result


def build_image(
    settings: Settings,
    engine: Engine,
    site: RenderedSite,
    base: BaseImage,
    base_facts: Callable[[], BaseFacts | None],
    labels: dict[str, str],
    reference: str,
    undo: Undo,
    progress: Progress,
    platform: Platform | None = None,
) -> str:
    """The image, written by shipit when the Dockerfile allows it (shipit/assemble.py),
    else by docker build (which tags it `reference`); `undo` learns of every image it adds.
    Its label LABEL_BUILDER says which: only shipit's own image is the same bytes on every
    machine, its config's times being the `created` label's (shipit/source_date.py).
    An image of another `platform` than the engine's is only ever written by shipit: docker
    build would run the Dockerfile's steps for the engine's platform."""
    from shipit.assemble import Unsupported, base_blocker, history_of, recipe_of
    from shipit.render import SERVED

    why = "builder = docker"
    facts = base_facts()
    if facts is not None:
        recipe = recipe_of(site.files.generated["Dockerfile"].decode(), base.reference, SERVED)
        layers = (facts.document.get("RootFS") or {}).get("Layers") or ()
        history = history_of(facts.history, len(layers))
        blocker = base_blocker(facts.document)
        if isinstance(recipe, Unsupported):
            why = f"the Dockerfile has {recipe.reason}"
        elif blocker is not None:
            why = f"{blocker} ({base.reference})"
        elif history is None:
            why = f"the history of {base.reference} does not match its layers"
        else:
            written = WrittenImage(settings, engine, site, recipe, facts.document, history, labels)
            progress(f"writing {reference} from {base.reference}: its settings and one layer")
            if facts.image_store == "classic":
                return written.load_archive(reference, undo, progress)
            image_id = written.load_layout(reference, undo, progress)
            if image_id is not None:
                return image_id
            why = (
                "the containerd image store keeps the manifest it loads, which names the "
                f"base's layers as its registry holds them, and {base.reference} was not "
                "pulled from a registry by digest"
            )
    if platform is not None:
        raise PreconditionError(
            f"the {platform} image cannot be written by shipit: {why}",
            "shipit writes an image of another platform itself, which needs a Dockerfile of "
            "image settings and one COPY (and, with the containerd image store, a base image "
            "from a registry); or build for the engine's own platform",
        )
    progress(f"building {reference} from {base.reference} with docker build ({why})")
    # SOURCE_DATE_EPOCH is not passed as a build arg: the legacy builder, which docker-py
    # drives, dates the image itself whatever the arg, and warns of an arg the Dockerfile
    # does not declare. Its image keeps the build's time; the push's label check covers it.
    labels = {**labels, LABEL_BUILDER: BUILT_BY_DOCKER}
    return engine.build(site.tar_chunks(labels), reference, progress, made=undo.made)


@dataclass(frozen=True)
class WrittenImage:
    """An image that shipit writes: the base's config with the Dockerfile's settings and
    one layer of the site, loaded into the engine in the form its image store takes."""

    settings: Settings
    engine: Engine
    site: RenderedSite
    recipe: Recipe
    base: dict[str, Any]  # the base's `docker image inspect`
    history: list[dict[str, Any]]
    labels: dict[str, str]

    def load_archive(self, reference: str, undo: Undo, progress: Progress) -> str:
        """The classic image store: a `docker save` archive of the site layer and the config,
        streamed as the layer is read; the engine holds the base's layers."""
        from shipit.load_archive import Assembly
        from shipit.push.blobs import KEEP_LAYER_BYTES, keep_built_image, uploads_itself

        keep = uploads_itself(self.settings.uploader, self.engine)
        assembly = Assembly(
            self.site,
            self.recipe,
            self.base,
            self.history,
            {**self.labels, LABEL_BUILDER: BUILT_BY_SHIPIT},
            self.labels[LABEL_CREATED],
            (),  # tagged once loaded: an interrupted load must not move `latest`
            keep_layer_bytes=KEEP_LAYER_BYTES if keep else 0,
        )
        existing = self.engine.image_ids()
        try:
            self.engine.load(assembly.archive(), reference, progress)
        finally:
            # Known once the whole archive was read: the engine may then have loaded it.
            if assembly.image_id and assembly.image_id not in existing:
                undo.made.append(assembly.image_id)
        if keep:
            keep_built_image(assembly.config, assembly.layer_diff_id, assembly.layer)
        return assembly.image_id

    def _base_platform(self) -> Platform:
        from shipit.platforms import Platform

        return Platform.of(
            {
                "os": self.base.get("Os") or "linux",
                "architecture": self.base.get("Architecture") or "",
                "variant": self.base.get("Variant") or "",
            }
        )

    def load_layout(self, reference: str, undo: Undo, progress: Progress) -> str | None:
        """The containerd image store: an OCI image layout whose manifest is the one shipit
        uploads, so the engine's image id is the digest every registry gets. The base's
        layers are named as its registry holds them (the base was pulled from there by
        digest, push/base_layers.py), and the base by its config's digest there, which is
        what the classic store calls its id: the same config bytes on both stores. None
        when the base's registry does not name its layers."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        from shipit.assemble import image_config
        from shipit.load_archive import LayoutAssembly, site_layer
        from shipit.push.base_layers import base_layers_of
        from shipit.push.blobs import BlobStore, compress_layer, keep_written_image, uploads_itself
        from shipit.push.compress import blocks_of

        base_ids = tuple((self.base.get("RootFS") or {}).get("Layers") or ())
        registry = base_layers_of(
            self.labels, base_ids, self.engine.registry_rules, progress, self._base_platform
        )
        if registry is None or not registry.config_digest:
            return None
        labels = {
            **self.labels,
            LABEL_BUILDER: BUILT_BY_SHIPIT,
            LABEL_BASE_IMAGE_ID: registry.config_digest,
        }
        with BlobStore.for_user().working_folder() as folder:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                blocks = blocks_of(site_layer(self.site, self.recipe))
                diff_id, layer = compress_layer(blocks, folder, pool)
            config = image_config(
                self.base,
                self.history,
                self.recipe,
                labels,
                diff_id,
                labels[LABEL_CREATED],
                base_id=registry.config_digest,
            )
            base_blobs = [registry.blobs[each] for each in base_ids]
            assembly = LayoutAssembly(
                config, layer, [(blob.digest, blob.size) for blob in base_blobs]
            )
            existing = self.engine.image_ids()
            try:
                self.engine.load(assembly.archive(), reference, progress)
            finally:
                if assembly.image_id not in existing:
                    undo.made.append(assembly.image_id)
            if uploads_itself(self.settings.uploader, self.engine):
                keep_written_image(assembly.manifest.raw, config, diff_id, layer)
        return assembly.image_id
