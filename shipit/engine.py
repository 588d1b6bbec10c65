"""The only module that talks to the Docker engine (through docker-py's low-level API).

Everything docker-py raises is turned into a ShipitError here, so callers never see a
docker exception.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

import docker
import docker.auth
import docker.errors
import requests
import urllib3.exceptions

from shipit.config import split_reference
from shipit.errors import (
    BuildError,
    EngineError,
    PortBusyError,
    PushError,
    RegistryUnreachableError,
    RunError,
)

BUILD_LOG_TAIL = 25
Progress = Callable[[str], None]
# (layer, status, bytes done, bytes in all): per-layer push progress for a progress bar.
LayerProgress = Callable[[str, str, int, int], None]

# What docker-py lets through when the connection to the engine fails: requests' errors from
# a call, urllib3's own from a stream (docker-py reads streams from the raw urllib3 response).
# docker.errors.APIError is a requests error too, so it must be caught before these.
_CONNECTION_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)
_READ_TIMEOUTS = (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)


# What the engine says when its disk fills during a build (the context or a layer).
_DISK_FULL_TEXT = "no space left on device"
_DISK_FULL_HINT = (
    "the Docker engine's disk is full: free space there (e.g. `docker system prune`) "
    "and build again"
)


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...]
    size: int
    layers: tuple[str, ...] = ()  # uncompressed layer digests (diff ids), base first


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str
    exit_code: int
    labels: Mapping[str, str]


@dataclass
class PushStream:
    """What a push stream said, read to its end."""

    digest: str = ""
    size: int = 0
    # Short (12 hex) diff ids of the layers this push uploaded, as the stream names them.
    pushed_layers: set[str] = field(default_factory=set)
    layers_existing: int = 0
    error: str = ""
    lines: list[str] = field(default_factory=list)


def _engine_location(api: docker.APIClient | None = None) -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"DOCKER_HOST={host}"
    # docker-py names a unix socket http+docker://localhost, which helps nobody.
    if api is not None and not str(api.base_url).startswith("http+docker:"):
        return str(api.base_url)
    return "the socket /var/run/docker.sock"


def _timed_out(error: BaseException) -> bool:
    """Whether the engine stopped answering (rather than the connection going away).

    requests hides a read timeout inside a ConnectionError when it comes while a body is read.
    """
    wrapped = [error, *error.args, error.__cause__, error.__context__]
    return any(isinstance(item, _READ_TIMEOUTS) for item in wrapped)


class Engine:
    def __init__(self, api: docker.APIClient) -> None:
        self.api = api

    @classmethod
    def connect(cls, timeout: float = 120) -> Engine:
        try:
            client = docker.from_env(timeout=timeout)  # type: ignore[arg-type]
            client.ping()
        except (docker.errors.DockerException, *_CONNECTION_ERRORS, OSError) as exc:
            raise EngineError(
                f"no Docker engine answers at {_engine_location()}",
                "start the engine (as root: scripts/testenv.sh starts dockerd) or point "
                "DOCKER_HOST at a running one",
            ) from exc
        return cls(client.api)

    def version(self) -> str:
        return str(self._call("asking its version", self.api.version).get("Version", "unknown"))

    def _call(self, doing: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except docker.errors.APIError:
            raise
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, doing) from exc

    def _connection_failure(self, error: BaseException, doing: str) -> EngineError:
        where = _engine_location(self.api)
        if _timed_out(error):
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
        try:
            data = self._call(f"inspecting image {reference}", self.api.inspect_image, reference)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise EngineError(f"cannot inspect image {reference}: {exc.explanation}") from exc
        config = data.get("Config") or {}
        return ImageInfo(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            labels=dict(config.get("Labels") or {}),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            size=int(data.get("Size") or 0),
            layers=tuple((data.get("RootFS") or {}).get("Layers") or ()),
        )

    def images_with_label(self, key: str, value: str) -> list[ImageInfo]:
        summaries = self._call(
            "listing images", self.api.images, filters={"label": f"{key}={value}"}
        )
        found = [self.image(summary["Id"]) for summary in summaries]
        return [image for image in found if image is not None]

    def pull(self, reference: str, progress: Progress = _quiet) -> None:
        repository, tag = split_reference(reference)
        try:
            for event in self.api.pull(repository, tag=tag, stream=True, decode=True):
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
        try:
            self._call(f"removing tag {reference}", self.api.remove_image, reference, noprune=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 404:
                raise EngineError(f"cannot remove tag {reference}: {exc.explanation}") from exc

    def build(
        self,
        context_tar: bytes | Iterator[bytes],
        tag: str,
        progress: Progress = _quiet,
    ) -> str:
        """Builds from a context tar and returns the image id. A context given in pieces is
        streamed to the engine as it is read (chunked upload), so a site of any size costs
        no more memory than a piece; an error raised while reading it ends the upload, and
        the engine builds nothing from an unfinished context."""
        log: deque[str] = deque(maxlen=BUILD_LOG_TAIL)
        image_id = ""
        try:
            stream = self.api.build(
                # docker-py hands fileobj to requests as the body, and requests sends any
                # iterable of bytes chunk by chunk (Transfer-Encoding: chunked).
                fileobj=io.BytesIO(context_tar)
                if isinstance(context_tar, bytes)
                else cast("IO[bytes]", context_tar),
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for event in stream:
                if "error" in event:
                    error = str(event["error"]).strip()
                    log.append(error)
                    raise BuildError(
                        f"docker build failed: {error}",
                        _DISK_FULL_HINT
                        if _DISK_FULL_TEXT in error
                        else "fix templates/Dockerfile.j2 or the base image (build log below)",
                        details="\n".join(log),
                    )
                text = str(event.get("stream", "")).rstrip()
                if text:
                    log.append(text)
                    for line in text.splitlines():
                        progress(line)
                aux = event.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise BuildError(
                f"docker build failed: {exc.explanation}",
                _DISK_FULL_HINT
                if _DISK_FULL_TEXT in str(exc.explanation)
                else "check the base image (--base-image) and the Dockerfile template",
                details="\n".join(log),
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise self._connection_failure(exc, f"building {tag}") from exc
        if not image_id:
            info = self.image(tag)
            if info is None:
                raise BuildError("docker build ended without an image", details="\n".join(log))
            image_id = info.id
        return image_id

    # Containers

    def containers_with_labels(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        summaries = self._call("listing containers", self.api.containers, all=True, filters=filters)
        found = [self.container(summary["Id"]) for summary in summaries]
        return [container for container in found if container is not None]

    def container(self, container_id: str) -> ContainerInfo | None:
        try:
            data = self._call(
                f"inspecting container {container_id[:12]}",
                self.api.inspect_container,
                container_id,
            )
        except docker.errors.NotFound:
            return None
        state = data.get("State") or {}
        return ContainerInfo(
            id=data["Id"],
            name=str(data.get("Name", "")).lstrip("/"),
            status=str(state.get("Status", "")),
            exit_code=int(state.get("ExitCode") or 0),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
        )

    def remove_container(self, container_id: str) -> None:
        try:
            self._call(
                f"removing container {container_id[:12]}",
                self.api.remove_container,
                container_id,
                force=True,
                v=True,
            )
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # 409: removal already in progress, which is what we want.
            if exc.status_code not in (404, 409):
                raise EngineError(
                    f"cannot remove container {container_id[:12]}: {exc.explanation}"
                ) from exc

    def logs_tail(self, container_id: str, lines: int = 20) -> str:
        try:
            raw = self._call(
                f"reading the log of container {container_id[:12]}",
                self.api.logs,
                container_id,
                tail=lines,
                stdout=True,
                stderr=True,
            )
        except docker.errors.APIError:
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
        except docker.errors.APIError as exc:
            raise RunError(f"cannot create container {name}: {exc.explanation}") from exc
        container_id = str(created["Id"])
        try:
            self._call(f"starting container {name}", self.api.start, container_id)
        except docker.errors.APIError as exc:
            self.remove_container(container_id)
            explanation = str(exc.explanation or exc)
            if (
                "address already in use" in explanation
                or "port is already allocated" in explanation
            ):
                raise PortBusyError(
                    f"port {host}:{port} is already in use",
                    "stop what listens there or choose another port with --port",
                ) from exc
            raise RunError(f"cannot start container {name}: {explanation}") from exc
        except BaseException:
            self.remove_container(container_id)
            raise
        return container_id

    # Registries

    def stored_credentials(self, registry: str) -> tuple[str, str] | None:
        """(user, secret) from the Docker config's credential helper, store or auths entry."""
        is_docker_hub = registry in ("docker.io", "index.docker.io", "registry-1.docker.io")
        try:
            config = docker.auth.load_config()
            found = docker.auth.resolve_authconfig(config, None if is_docker_hub else registry)
        except (docker.errors.DockerException, OSError, ValueError):
            return None
        if not found:
            return None
        username = found.get("Username") or found.get("username")
        secret = found.get("Password") or found.get("password") or found.get("IdentityToken")
        return (str(username), str(secret)) if username and secret else None

    def push(
        self,
        repository: str,
        tag: str,
        auth_config: Mapping[str, str] | None,
        progress: Progress = _quiet,
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
            for event in events:
                _read_push_event(event, result, progress, layer_progress)
        except docker.errors.APIError as exc:
            result.error = str(exc.explanation or exc)
        except _CONNECTION_ERRORS as exc:
            raise self._push_failure(exc, f"{repository}:{tag}") from exc
        return result

    def _push_failure(self, error: BaseException, reference: str) -> PushError:
        if _timed_out(error):
            # The engine says nothing while an upload waits on the registry, so this is most
            # likely a registry that stopped taking the upload: worth a retry, like a registry
            # that does not answer shipit's own requests. (A hung engine instead fails the
            # retry's first engine call.)
            return RegistryUnreachableError(
                f"the push of {reference} made no progress for {self.api.timeout:g} s",
                "check that the registry answers and accepts uploads, then push again",
            )
        return PushError(
            f"lost the Docker engine at {_engine_location(self.api)} while pushing {reference}",
            "check that dockerd is still running (`docker info`), then push again",
        )


def _read_push_event(
    event: Mapping[str, Any],
    result: PushStream,
    progress: Progress,
    layer_progress: LayerProgress | None,
) -> None:
    if "error" in event or "errorDetail" in event:
        detail = event.get("errorDetail") or {}
        message = event.get("error") or detail.get("message") or "unknown push error"
        result.error = str(message).strip()
        result.lines.append(result.error)
        return
    status = str(event.get("status", ""))
    layer = str(event.get("id", ""))
    aux = event.get("aux")
    if isinstance(aux, dict) and aux.get("Digest"):
        result.digest = str(aux["Digest"])
        result.size = int(aux.get("Size") or 0)
    detail = event.get("progressDetail") or {}
    if (
        layer_progress is not None
        and layer
        and status in ("Pushing", "Pushed", "Layer already exists")
    ):
        total = int(detail.get("total") or 0)
        done = int(detail.get("current") or 0) if status == "Pushing" else total
        layer_progress(layer, status.lower(), done, total)
    if status == "Pushed" and layer:
        result.pushed_layers.add(layer)
        progress(f"{layer}: pushed")
    elif status == "Layer already exists" and layer:
        result.layers_existing += 1
        progress(f"{layer}: already in the registry")
    elif status and not detail:
        result.lines.append(f"{layer}: {status}" if layer else status)
