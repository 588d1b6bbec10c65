"""Why the Docker engine cannot be reached, in one line: an address that does not answer, TLS
files or a handshake that fail, ssh:// without its client or paramiko. Engine.connect asks
here when the engine does not answer at all (connect_failure); Engine's later calls ask
whether a connection went silent or went away (timed_out). Also why a container would not
start (start_refusal).
"""

from __future__ import annotations

import os
import ssl

from shipit import DISTRIBUTION, paramiko_deferred  # noqa: F401 - before docker, see that module

# isort: split
import docker.errors
import requests
import urllib3.exceptions

from shipit.engine_location import EngineAddress
from shipit.errors import (
    NO_EMULATOR_WORDS,
    EngineError,
    PortBusyError,
    PushError,
    RunError,
    no_emulator,
    stalled_push,
)

# A read timeout, from a call (requests) or from a stream (urllib3).
_READ_TIMEOUTS = (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)


# Seconds to wait for an engine to answer the first time: an address that swallows packets
# should fail in seconds, not after engine_timeout (which is about pushes that stall).
CONNECT_TIMEOUT = 15.0
_TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


def timed_out(error: BaseException) -> bool:
    """Whether the engine stopped answering (rather than the connection going away).

    requests hides a read timeout inside a ConnectionError when it comes while a body is read.
    """
    wrapped = [error, *error.args, error.__cause__, error.__context__]
    return any(isinstance(item, _READ_TIMEOUTS) for item in wrapped)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def tls_files_problem(address: EngineAddress) -> EngineError | None:
    """What is wrong with the TLS files, said before docker-py says it less clearly."""
    variable = "DOCKER_CERT_PATH" if address.source == "DOCKER_HOST" else address.source
    folder = address.cert_path
    if not os.path.isdir(folder):
        return EngineError(
            f"{variable}={folder} is not a folder; TLS to {address.url} needs ca.pem, "
            "cert.pem and key.pem from there",
            "point DOCKER_CERT_PATH at the engine's client certificates "
            "(or unset DOCKER_TLS_VERIFY for an engine without TLS)",
        )
    missing = [name for name in _TLS_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        return EngineError(
            f"{variable}={folder} has no {', '.join(missing)}",
            "put the engine's CA (ca.pem) and your client certificate and key "
            "(cert.pem, key.pem) there",
        )
    for name in _TLS_FILES:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as handle:
                head = handle.read(4096)
        except OSError as exc:
            return EngineError(f"cannot read {path}: {exc.strerror}", "check its permissions")
        if b"-----BEGIN " not in head:
            return EngineError(f"{path} is not a PEM file", f"replace it with the PEM {name}")
    return None


_UNREACHABLE_REASONS = (
    (("name or service not known", "failed to resolve", "name resolution"), "cannot resolve"),
    (("connection refused",), "nothing listens there (connection refused)"),
    (("no route to host", "network is unreachable"), "the host is unreachable (no route)"),
    (("timed out", "timeout"), f"no answer within {CONNECT_TIMEOUT:g} s (unreachable?)"),
    (
        ("connection reset", "connection aborted", "remote end closed"),
        "the engine closed the connection at once (a TLS port without DOCKER_TLS_VERIFY?)",
    ),
)


_TLS_REASONS = (
    ("certificate required", "the engine wants a client certificate (DOCKER_CERT_PATH)"),
    ("unknown ca", "the engine does not trust the client certificate's CA"),
    ("bad certificate", "the engine refused the client certificate"),
    ("hostname mismatch", "the engine's certificate does not name this host"),
    ("doesn't match", "the engine's certificate does not name this host"),
    ("expired", "a certificate has expired"),
)


def connect_failure(address: EngineAddress, error: BaseException) -> EngineError:
    """The real reason an engine does not answer, in one line."""
    where = address.describe()
    causes = _causes(error)
    lowered = " ".join(str(item) for item in causes).lower()
    if isinstance(error, docker.errors.TLSParameterError):
        return tls_files_problem(address) or EngineError(
            f"the TLS settings for {where} are incomplete: {error}",
            "set DOCKER_CERT_PATH to a folder with ca.pem, cert.pem and key.pem",
        )
    if "paramiko" in lowered:
        return no_ssh_support(address)
    if address.scheme == "ssh" and any(isinstance(item, FileNotFoundError) for item in causes):
        return EngineError(
            f"cannot reach the engine at {where}: ssh:// needs the OpenSSH client (`ssh`) on PATH",
            "install it (apt-get install openssh-client), or use tcp:// with TLS",
        )
    if "invalid bind address" in lowered or "invalid port" in lowered:
        return EngineError(
            f"{where} is not an engine address",
            "use unix:///path, tcp://host:port or ssh://user@host",
        )
    if any(isinstance(item, ssl.SSLError | requests.exceptions.SSLError) for item in causes):
        return _tls_failure(address, lowered)
    if "client sent an http request to an https server" in lowered:
        return EngineError(
            f"the engine at {where} wants TLS",
            "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to its client certificates",
        )
    if address.scheme == "ssh":
        return EngineError(
            f"cannot reach the engine over ssh at {where} (ssh said why above)",
            f"check that `docker -H {address.url} version` works: ssh keys, known_hosts, "
            "docker on that machine",
        )
    if not address.is_local_socket:
        reason = next(
            (
                text if text != "cannot resolve" else f"cannot resolve the host {address.host}"
                for markers, text in _UNREACHABLE_REASONS
                if any(marker in lowered for marker in markers)
            ),
            str(error).splitlines()[0][:200] if str(error) else type(error).__name__,
        )
        return EngineError(
            f"cannot reach the Docker engine at {where}: {reason}",
            "check the address and that dockerd listens there, or unset DOCKER_HOST for the "
            "local engine",
        )
    return EngineError(
        f"no Docker engine answers at {where}",
        "start the engine (as root: scripts/testenv.sh starts dockerd) or point "
        "DOCKER_HOST at a running one",
    )


def no_ssh_support(address: EngineAddress) -> EngineError:
    """docker-py imports paramiko for every ssh:// engine, though shipit talks through the
    OpenSSH client; paramiko comes with shipit's ssh extra."""
    return EngineError(
        f"cannot reach the engine at {address.describe()}: ssh:// engines need paramiko, "
        "which this shipit was installed without",
        f"pip install '{DISTRIBUTION}[ssh]' (with pipx: pipx inject {DISTRIBUTION} paramiko), "
        "or use tcp:// with TLS",
    )


def _tls_failure(address: EngineAddress, lowered: str) -> EngineError:
    where = address.describe()
    if "wrong version number" in lowered or "record layer failure" in lowered:
        return EngineError(
            f"TLS handshake with {where} failed: the engine does not speak TLS there",
            "unset DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for this engine, or use its TLS port "
            "(usually 2376)",
        )
    if "certificate verify failed" in lowered:
        return EngineError(
            f"TLS handshake with {where} failed: the engine's certificate is not signed by "
            f"{os.path.join(address.cert_path, 'ca.pem')}",
            "put the engine's CA certificate there (DOCKER_CERT_PATH)",
        )
    reason = next(
        (text for marker, text in _TLS_REASONS if marker in lowered),
        "the engine refused the connection's certificates",
    )
    return EngineError(
        f"TLS handshake with {where} failed: {reason}",
        "check that DOCKER_CERT_PATH holds a client certificate signed by the engine's CA",
    )


def start_refusal(name: str, host: str, port: int, explanation: str, architecture: str) -> RunError:
    """The engine's refusal to start container `name` (publishing host:port, of an image of
    `architecture`), said as what to do about it."""
    lowered = explanation.lower()
    if "address already in use" in explanation or "port is already allocated" in explanation:
        return PortBusyError(
            f"port {host}:{port} is already in use",
            "stop what listens there or choose another port with --port",
        )
    if "cannot assign requested address" in lowered:
        return RunError(
            f"cannot publish on {host}:{port}: the engine's machine has no address "
            f"{host} (Cannot assign requested address)",
            "use one of its addresses with --host, e.g. 127.0.0.1, or 0.0.0.0 for all",
        )
    if NO_EMULATOR_WORDS in lowered:
        return no_emulator(architecture)
    return RunError(f"cannot start container {name}: {explanation}")


def push_failure(
    error: BaseException, reference: str, address: EngineAddress, timeout: float
) -> PushError:
    """What a lost connection during the engine's push of `reference` means."""
    if timed_out(error):
        # The engine says nothing while an upload waits on the registry: most likely a
        # registry that stopped taking it, worth a retry (a hung engine fails the retry).
        return stalled_push(reference, timeout)
    return PushError(
        f"lost the Docker engine at {address.describe()} while pushing {reference}",
        "check that dockerd is still running (`docker info`), then push again",
    )
