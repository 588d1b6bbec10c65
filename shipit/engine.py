"""The only module that talks to the Docker engine (through docker-py's low-level API).

Everything docker-py raises is turned into a ShipitError here, so callers never see a
docker exception.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shipit import paramiko_deferred  # before docker, see that module

# isort: split
import docker
import docker.errors
import docker.utils
import requests
import urllib3.exceptions

from shipit import interrupts
from shipit.build_stream import BuildSteps, disk_full_or, load_failure, stop_sending
from shipit.config import split_reference
from shipit.digests import short_id
from shipit.engine_diagnosis import (
    CONNECT_TIMEOUT,
    connect_failure,
    no_ssh_support,
    push_failure,
    start_refusal,
    timed_out,
    tls_files_problem,
)
from shipit.engine_location import EngineAddress, EngineClient
from shipit.errors import (
    BuildError,
    EngineError,
    EngineRefused,
    RunError,
    stalled_push,
)
from shipit.platforms import Platform
from shipit.progress import LayerProgress, Progress, quiet
from shipit.push_stream import PushStream, read_push_event
from shipit.registries.transport import RegistryRules

# What docker-py lets through when the connection to the engine fails: requests' errors from
# a call, urllib3's own from a stream (docker-py reads streams from the raw urllib3 response).
# docker.errors.APIError is a requests error too, so it must be caught before these.
_CONNECTION_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...]
    size: int
    layers: tuple[str, ...] = ()  # uncompressed layer digests (diff ids), base first
    # The platform its config names ("linux", "arm64", "v8"): an image of another platform
    # than the engine's runs only under emulation.
    os: str = ""
    architecture: str = ""
    variant: str = ""


@dataclass(frozen=True)
class ContainerInfo:
    """A container as the engine describes it, for `run`, `stop` and the cleanup of both."""

    id: str
    name: str
    status: str
    exit_code: int
    labels: Mapping[str, str]


# A removal answered "gone" (404) or "already under way" (409) did what its caller wants.
_GONE_OR_GOING = (404, 409)

# How an engine names "every address of this machine" (noqa: it binds nothing).
ALL_ADDRESSES = frozenset({"0.0.0.0", "::", ""})  # noqa: S104


@dataclass(frozen=True)
class EngineFacts:
    """What `shipit doctor` tells about the engine."""

    version: str
    image_store: str  # "containerd" or "classic"


class Engine:
    def __init__(self, api: docker.APIClient, address: EngineAddress | None = None) -> None:
        self.api = api
        self.address = address or EngineAddress(str(api.base_url), "a client")
        self._info: Mapping[str, Any] | None = None
        self._info_lock = threading.Lock()

    @classmethod
    def connect(cls, timeout: float = 120) -> Engine:
        address = EngineAddress.resolve()
        # A context's TLS files live in its own store, checked by docker-py as it loads them.
        if address.tls and address.source == "DOCKER_HOST":
            problem = tls_files_problem(address)
            if problem is not None:
                raise problem
        if address.scheme == "ssh" and not paramiko_deferred.installed():
            raise no_ssh_support(address)
        try:
            params: dict[str, Any] = dict(docker.utils.kwargs_from_env())
            if "base_url" not in params:
                from docker.context import ContextAPI

                params.update(ContextAPI.kwargs_from_context())
            api = EngineClient(
                timeout=min(timeout, CONNECT_TIMEOUT),  # type: ignore[arg-type]
                # The OpenSSH client reads ~/.ssh/config, keys and agents as the docker CLI does.
                use_ssh_client=address.scheme == "ssh",
                **params,
            )
            # No ping: the client has just asked the engine for its API version, a round
            # trip that fails the same way when nothing answers.
            if "version" in params:
                api.ping()
        except (docker.errors.DockerException, *_CONNECTION_ERRORS, OSError) as exc:
            raise connect_failure(address, exc) from exc
        api.timeout = timeout  # type: ignore[assignment]
        return cls(api, address)

    def info(self) -> Mapping[str, Any]:
        """`docker info`, asked once per connection (the push's registry clients and the
        build's image store both read it)."""
        with self._info_lock:
            if self._info is None:
                self._info = dict(self._call("asking what it is", self.api.info))
            return self._info

    def registry_rules(self) -> RegistryRules:
        """Which registries this engine treats as insecure (`insecure-registries`, and
        loopback): shipit's own registry client follows the same rules."""
        return RegistryRules.from_registry_config(
            self.info().get("RegistryConfig"), f"the Docker engine at {self.address.describe()}"
        )

    def facts(self) -> EngineFacts:
        info = self.info()
        driver_status = {
            str(pair[0]): str(pair[1]) for pair in info.get("DriverStatus") or () if len(pair) == 2
        }
        containerd = "snapshotter" in driver_status.get("driver-type", "")
        return EngineFacts(
            version=str(info.get("ServerVersion", "unknown")),
            image_store="containerd" if containerd else "classic",
        )

    def platform(self) -> Platform:
        """The engine's own platform: what it builds and runs without --platform. `docker
        version` names it as docker does (amd64, arm64); `docker info` only as uname does."""
        version = self._call("asking for its version", self.api.version)
        return Platform.of({"os": version.get("Os"), "architecture": version.get("Arch")})

    def _call(self, doing: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """function(...) with every docker-py and requests exception turned into an
        EngineError: EngineRefused (with the status) when the engine answered and refused."""
        try:
            return function(*args, **kwargs)
        except docker.errors.APIError as exc:
            explanation = " ".join(str(exc.explanation or exc).split())
            raise EngineRefused(
                f"the Docker engine at {self.address.describe()} refused {doing}: {explanation}",
                "check the engine (`docker info`, its log) and run again",
                status=int(exc.status_code or 0),
                explanation=explanation,
            ) from exc
        except docker.errors.DockerException as exc:
            raise EngineError(f"docker-py failed while {doing}: {exc}") from exc
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, doing) from exc

    def _call_unless_missing(
        self,
        doing: str,
        function: Callable[..., Any],
        *args: Any,
        absent: tuple[int, ...] = (404,),
        **kwargs: Any,
    ) -> Any:
        """_call, with None where the engine answers that the thing asked for is not there
        (404, or the statuses in `absent`): what a lookup or a cleanup wants."""
        try:
            return self._call(doing, function, *args, **kwargs)
        except EngineRefused as exc:
            if exc.status in absent:
                return None
            raise

    def _connection_failure(self, error: BaseException, doing: str) -> EngineError:
        where = self.address.describe()
        if timed_out(error):
            return EngineError(
                f"the Docker engine at {where} sent nothing for {self.api.timeout:g} s "
                f"while {doing}",
                "check that dockerd answers (`docker info`) and is not overloaded, then run again",
            )
        return EngineError(
            f"lost the Docker engine at {where} while {doing}",
            "check that dockerd is still running (`docker info`), then run again",
        )

    # Images

    def image(self, reference: str) -> ImageInfo | None:
        data = self._call_unless_missing(
            f"inspecting image {reference}", self.api.inspect_image, reference
        )
        if data is None:
            return None
        config = data.get("Config") or {}
        return ImageInfo(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            labels=dict(config.get("Labels") or {}),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            size=int(data.get("Size") or 0),
            layers=tuple((data.get("RootFS") or {}).get("Layers") or ()),
            os=str(data.get("Os") or ""),
            architecture=str(data.get("Architecture") or ""),
            variant=str(data.get("Variant") or ""),
        )

    def image_document(self, reference: str) -> dict[str, Any]:
        """Everything `docker image inspect` says of an image that exists."""
        return dict(self._call(f"inspecting image {reference}", self.api.inspect_image, reference))

    def image_history(self, reference: str) -> list[dict[str, Any]]:
        return list(self._call(f"reading the history of {reference}", self.api.history, reference))

    def image_file_archive(self, image_id: str, path: str) -> bytes | None:
        """A tar of one file of an image (None when it has none), from a container created
        and never started: nothing of the image runs, whatever its platform."""
        doing = f"reading {path} of image {short_id(image_id)}"
        created = self._call(doing, self.api.create_container, image_id, entrypoint=[path])
        try:
            return self.container_archive(created["Id"], path)
        finally:
            self.remove_container(created["Id"])

    def image_store(self) -> str:
        """ "classic" or "containerd"."""
        return self.facts().image_store

    def images_with_label(self, key: str, value: str) -> list[ImageInfo]:
        summaries = self._call(
            "listing images", self.api.images, filters={"label": f"{key}={value}"}
        )
        found = [self.image(summary["Id"]) for summary in summaries]
        return [image for image in found if image is not None]

    def pull(
        self,
        reference: str,
        progress: Progress = quiet,
        *,
        platform: str = "",
        auth_config: Mapping[str, str] | None = None,
    ) -> None:
        """Pulls an image (of `platform`, else the engine's own), with `auth_config` when the
        registry wants a login the engine may not hold."""
        repository, tag = split_reference(reference)
        options: dict[str, Any] = {"stream": True, "decode": True}
        if platform:
            options["platform"] = platform
        if auth_config:
            options["auth_config"] = dict(auth_config)
        try:
            for event in self.api.pull(repository, tag=tag, **options):
                if "error" in event:
                    raise EngineError(f"cannot pull {reference}: {event['error']}")
                if event.get("status") and not event.get("progressDetail"):
                    progress(f"pull: {event['status']}")
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot pull {reference}: {exc.explanation}") from exc
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, f"pulling {reference}") from exc

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self._call(
            f"tagging {repository}:{tag}", self.api.tag, image_id, repository, tag, force=True
        )

    def untag(self, reference: str) -> None:
        self._call_unless_missing(
            f"removing tag {reference}", self.api.remove_image, reference, noprune=True
        )

    def build(
        self,
        context_tar: bytes | Iterator[bytes],
        tag: str,
        progress: Progress = quiet,
        made: list[str] | None = None,
    ) -> str:
        """Builds from a context tar (docker build) and returns the image id. A context given
        in pieces is streamed to the engine as it is read (chunked upload), so a site of any
        size costs no more memory than a piece; an error raised while reading it ends the
        upload, and the engine builds nothing from an unfinished context. `made` learns of
        each image the build adds (its steps', the image last) as the engine names it.

        Interrupted (SIGINT, SIGTERM), the build is cancelled and the engine's answer read to
        its end: the engine finishes the step under way (a COPY runs to its end, a RUN is
        killed) and names every image the steps left, so that `made` holds all of them when
        the interrupt goes on. Removing them, and putting `tag` back, is the caller's
        (builder.undone_unless_complete), as for a build that fails."""
        api: Any = self.api
        steps = BuildSteps(progress, [] if made is None else made)
        started: list[Any] = []

        def cancel() -> None:
            for response in started:
                stop_sending(response)

        try:
            with interrupts.deferred(on_signal=cancel):
                started.append(self._start_build(context_tar, tag))
                if interrupts.pending():
                    cancel()
                for event in api._stream_helper(started[0], decode=True):
                    steps.read(event)
            if not steps.image_id:
                # An engine older than API 1.30 names the image only by its tag.
                info = self.image(tag)
                if info is None:
                    raise BuildError(
                        "docker build ended without an image", details="\n".join(steps.log)
                    )
                steps.image_id = info.id
        except docker.errors.APIError as exc:
            raise BuildError(
                f"docker build failed: {exc.explanation}",
                disk_full_or(
                    str(exc.explanation),
                    "check the base image (--base-image) and the Dockerfile template",
                ),
                details="\n".join(steps.log),
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, f"building {tag}") from exc
        return steps.image_id

    def _start_build(self, context_tar: bytes | Iterator[bytes], tag: str) -> Any:
        """The build's request, sent as docker-py's APIClient.build sends it, answered with
        the response whose connection shipit can half-close to cancel the build."""
        api: Any = self.api
        params: dict[str, Any] = {"t": tag, "rm": True, "forcerm": True, "pull": False}
        build_args = api._proxy_configs.get_environment()
        if build_args:
            params["buildargs"] = json.dumps(build_args)
        headers = {"Content-Type": "application/tar"}
        api._set_auth_headers(headers)
        # requests sends any iterable of bytes chunk by chunk (Transfer-Encoding: chunked).
        pieces = (context_tar,) if isinstance(context_tar, bytes) else context_tar
        response = api._post(
            api._url("/build"),
            data=interrupts.between_pieces(pieces),
            params=params,
            headers=headers,
            stream=True,
            # A build step may be silent for long: only a cut connection ends the wait.
            timeout=None,
        )
        api._raise_for_status(response)
        return response

    def image_ids(self) -> frozenset[str]:
        """The id of every image the engine holds, the build cache's included."""
        return frozenset(self._call("listing images", self.api.images, all=True, quiet=True))

    def remove_images(self, image_ids: Iterable[str]) -> None:
        """Removes untagged images by id, the last first (a build's steps: children before
        their parents). An image something still uses (a tag, a container, a child) stays."""
        for image_id in reversed(list(image_ids)):
            info = self.image(image_id)
            if info is None or info.tags:
                continue
            self._call_unless_missing(
                f"removing image {short_id(image_id)}",
                self.api.remove_image,
                image_id,
                absent=_GONE_OR_GOING,
                noprune=True,
            )

    def load(self, archive: Iterator[bytes], reference: str, progress: Progress = quiet) -> None:
        """Loads an image archive (`docker load`), streamed as it is read: an error raised
        while reading it ends the upload, and the engine loads nothing from an unfinished
        archive. Interrupted (SIGINT, SIGTERM) while the archive is sent, the upload stops
        there; once all of it is sent, the engine loads it whatever shipit does, so the load
        is waited for before the interrupt goes on (and the caller removes the image)."""
        # docker-py's load_image reads the answer without checking its status first.
        api: Any = self.api
        try:
            with interrupts.deferred():
                response = api._post(
                    api._url("/images/load"),
                    data=interrupts.between_pieces(archive),
                    params={},
                    stream=True,
                )
                api._raise_for_status(response)
                for event in api._stream_helper(response, decode=True):
                    if "error" in event:
                        raise load_failure(str(event["error"]).strip())
                    text = str(event.get("stream", "")).strip()
                    # Not the engine's note that a moved tag leaves its old image untagged.
                    if text.startswith("Loaded image"):
                        progress(text)
        except docker.errors.APIError as exc:
            raise load_failure(str(exc.explanation)) from exc
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, f"loading {reference}") from exc

    def export_image(self, image_id: str) -> Iterator[bytes]:
        """The image as `docker save` writes it, streamed in chunks as the engine sends it."""
        doing = f"exporting image {short_id(image_id)}"
        chunks: Iterator[bytes] = self._call(
            doing, self.api.get_image, image_id, chunk_size=1 << 20
        )
        try:
            yield from chunks
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, doing) from exc

    # Containers

    def containers_with_labels(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        summaries = self._call("listing containers", self.api.containers, all=True, filters=filters)
        found = [self.container(summary["Id"]) for summary in summaries]
        return [container for container in found if container is not None]

    def container(self, container_id: str) -> ContainerInfo | None:
        doing = f"inspecting container {short_id(container_id)}"
        data = self._call_unless_missing(doing, self.api.inspect_container, container_id)
        if data is None:
            return None
        state = data.get("State") or {}
        return ContainerInfo(
            id=data["Id"],
            name=str(data.get("Name", "")).lstrip("/"),
            status=str(state.get("Status", "")),
            exit_code=int(state.get("ExitCode") or 0),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
        )

    def container_publishing(self, host: str, port: int) -> str | None:
        """The name of a container that publishes `port` on `host` (or on all addresses)."""
        doing = f"listing containers that publish port {port}"
        summaries = self._call(doing, self.api.containers, filters={"publish": str(port)})
        for summary in summaries:
            for binding in summary.get("Ports") or ():
                if int(binding.get("PublicPort") or 0) != port:
                    continue
                bound = str(binding.get("IP") or "")
                if bound == host or {bound, host} & ALL_ADDRESSES:
                    names = summary.get("Names") or [short_id(summary.get("Id", ""))]
                    return str(names[0]).lstrip("/")
        return None

    def remove_container(self, container_id: str) -> None:
        self._call_unless_missing(
            f"removing container {short_id(container_id)}",
            self.api.remove_container,
            container_id,
            absent=_GONE_OR_GOING,
            force=True,
            v=True,
        )

    def container_archive(self, container_id: str, path: str) -> bytes | None:
        """The tar `docker cp` reads of a small file in a container; None when it has none."""

        def read() -> bytes:
            return b"".join(self.api.get_archive(container_id, path)[0])

        archive: bytes | None = self._call_unless_missing(
            f"reading {path} in container {short_id(container_id)}", read
        )
        return archive

    def logs_tail(self, container_id: str, lines: int = 20) -> str:
        doing = f"reading the log of container {short_id(container_id)}"
        try:
            raw = self._call(
                doing, self.api.logs, container_id, tail=lines, stdout=True, stderr=True
            )
        except EngineRefused:
            return ""
        return bytes(raw).decode("utf-8", "replace").rstrip()

    def run(
        self,
        image: str,
        name: str,
        host: str,
        port: int,
        container_port: int,
        labels: Mapping[str, str],
        read_only: bool = False,
    ) -> str:
        """Creates and starts a detached container; removes it again if it cannot start."""
        host_config = self.api.create_host_config(
            port_bindings={container_port: (host, port)},
            read_only=read_only,
            tmpfs={"/tmp": "rw,size=64m"} if read_only else None,  # noqa: S108 - inside the container
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
        )
        try:
            created = self._call(
                f"creating container {name}",
                self.api.create_container,
                image,
                name=name,
                labels=dict(labels),
                ports=[container_port],
                host_config=host_config,
                detach=True,
            )
        except EngineRefused as exc:
            raise RunError(f"cannot create container {name}: {exc.explanation}") from exc
        container_id = str(created["Id"])
        try:
            self._call(f"starting container {name}", self.api.start, container_id)
        except EngineRefused as exc:
            self.remove_container(container_id)
            found = self.image(image)
            architecture = found.architecture if found else ""
            raise start_refusal(name, host, port, exc.explanation, architecture) from exc
        except BaseException:
            self.remove_container(container_id)
            raise
        return container_id

    # Registries

    def push(
        self,
        repository: str,
        tag: str,
        auth_config: Mapping[str, str] | None,
        progress: Progress = quiet,
        layer_progress: LayerProgress | None = None,
    ) -> PushStream:
        """Pushes and reads the stream to its end: docker-py does not raise when a registry
        refuses, the refusal is only a line in the stream."""
        result = PushStream()
        try:
            events: Iterator[dict[str, Any]] = self.api.push(
                repository,
                tag=tag,
                stream=True,
                decode=True,
                auth_config=dict(auth_config) if auth_config else None,
            )
            # The containerd image store keeps sending the same progress while an upload
            # waits on the registry, so silence alone (the read timeout) does not show a
            # stall there: any event that says nothing new counts as silence too.
            said: set[tuple[str, str, int]] = set()
            last_news = time.monotonic()
            for event in events:
                read_push_event(event, result, progress, layer_progress)
                detail = event.get("progressDetail") or {}
                news = (
                    str(event.get("id", "")),
                    str(event.get("status", "")),
                    int(detail.get("current") or 0),
                )
                if news not in said:
                    said.add(news)
                    last_news = time.monotonic()
                elif time.monotonic() - last_news > float(self.api.timeout):
                    raise stalled_push(f"{repository}:{tag}", float(self.api.timeout))
        except docker.errors.APIError as exc:
            result.error = str(exc.explanation or exc)
        except _CONNECTION_ERRORS as exc:
            timeout = float(self.api.timeout)
            raise push_failure(exc, f"{repository}:{tag}", self.address, timeout) from exc
        return result
