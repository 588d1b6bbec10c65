"""How shipit's registry client reaches a registry: the Docker engine's rules, applied.

The engine decides per registry host (moby's registry service):

- A registry is *insecure* when `docker info`'s RegistryConfig says so: its name is an
  IndexConfigs entry with Secure false (an `insecure-registries` entry that is no CIDR), or
  one of its addresses lies in InsecureRegistryCIDRs (an `insecure-registries` CIDR, and
  127.0.0.0/8 always). A name is resolved to find its addresses, as the engine does.
- Every other registry is *secure*: HTTPS only, verified against the system's CAs plus the
  `*.crt` files in `/etc/docker/certs.d/HOST:PORT/`, with the client certificate of a
  `*.cert` and `*.key` pair there. shipit also reads `$DOCKER_CONFIG/certs.d/HOST:PORT/`
  (default ~/.docker), where a user without root keeps them.
- An insecure registry gets HTTPS without verification when it speaks TLS, else plain
  HTTP, in that order; certs.d is not read for it.

Proxies come from the environment as requests reads them (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY), except that a loopback registry is never proxied: the engine's Go client never
sends loopback through a proxy either, and a proxy cannot reach this machine's loopback.

`RegistryTransport.tls_failure` turns a failed handshake into one line that says which of
these rules the registry broke and what to change.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.exceptions

from shipit.errors import ConfigError
from shipit.loopback import is_loopback
from shipit.registries.credentials import docker_config_path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where dockerd reads registry certificates (moby's registry.CertsDir on Linux).
ENGINE_CERTS_DIR = Path("/etc/docker/certs.d")
# What an engine started without `insecure-registries` reports (Docker 20.10 and 26 alike).
DEFAULT_INSECURE_CIDRS = ("127.0.0.0/8",)
DAEMON_JSON = "/etc/docker/daemon.json"

# OpenSSL's words when the other end does not speak TLS: a plain HTTP server answers the
# ClientHello with "HTTP/1.1 400", which is no TLS record.
_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "HTTP_REQUEST",
)
# Alerts a server sends when it wants (another) client certificate.
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "HANDSHAKE_FAILURE",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
)


# ---------------------------------------------------------------------------------------
# Hosts (pure)
# ---------------------------------------------------------------------------------------


def split_host(host: str) -> tuple[str, str]:
    """("name or address", "port" or "") of "host", "host:port", "[v6]:port" or a bare v6."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host[1:], ""
        rest = host[end + 1 :]
        return host[1:end], rest[1:] if rest.startswith(":") else ""
    if host.count(":") == 1:
        name, port = host.split(":", 1)
        return name, port
    return host, ""


def resolve_addresses(name: str) -> list[str]:
    """The addresses a name resolves to (what the engine's lookup finds); [] when none."""
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(entry[4][0]) for entry in found})


# ---------------------------------------------------------------------------------------
# The engine's rules (pure, but for the name lookup)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryRules:
    """Which registries an engine treats as insecure; `source` names the engine."""

    insecure_networks: tuple[IPNetwork, ...]
    secure_by_name: Mapping[str, bool] = field(default_factory=dict)
    source: str = "an engine with docker's default rules"

    @classmethod
    def defaults(cls) -> RegistryRules:
        """The rules of an engine started without `insecure-registries`: loopback only."""
        return cls(tuple(ipaddress.ip_network(cidr) for cidr in DEFAULT_INSECURE_CIDRS))

    @classmethod
    def from_registry_config(cls, config: object, source: str) -> RegistryRules:
        """From `docker info`'s RegistryConfig; entries that do not parse are left out,
        as the engine validated them when it started."""
        if not isinstance(config, Mapping):
            return cls.defaults()
        networks: list[IPNetwork] = []
        for cidr in config.get("InsecureRegistryCIDRs") or ():
            try:
                networks.append(ipaddress.ip_network(str(cidr), strict=False))
            except ValueError:
                continue
        indexes = config.get("IndexConfigs") or {}
        secure_by_name = {
            str(name): bool(index.get("Secure", True))
            for name, index in (indexes.items() if isinstance(indexes, Mapping) else ())
            if isinstance(index, Mapping)
        }
        return cls(tuple(networks), secure_by_name, source)

    def is_secure(self, host: str, resolve: Callable[[str], list[str]] = resolve_addresses) -> bool:
        """moby's isSecureIndex: the IndexConfigs entry first, then the addresses."""
        if host in self.secure_by_name:
            return self.secure_by_name[host]
        name = split_host(host)[0]
        try:
            addresses = [ipaddress.ip_address(name)]
        except ValueError:
            addresses = []
            for text in resolve(name):
                try:
                    addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
                except ValueError:
                    continue
        return not any(
            address in network
            for address in addresses
            for network in self.insecure_networks
            if address.version == network.version
        )


def rules_for(host: str, engine_rules: Callable[[], RegistryRules]) -> RegistryRules:
    """The engine's rules when they can change how `host` is reached, else docker's defaults:
    every engine treats 127.0.0.0/8 as insecure, and its settings only add insecure hosts,
    so a loopback registry costs no `docker info` (which a busy engine may take 100 ms for)."""
    defaults = RegistryRules.defaults()
    return engine_rules() if defaults.is_secure(host) else defaults


# ---------------------------------------------------------------------------------------
# certs.d
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostCertificates:
    """What the certs.d folders hold for one registry host."""

    folders: tuple[Path, ...]  # every folder looked in, whether it exists or not
    ca_files: tuple[Path, ...] = ()
    client_pairs: tuple[tuple[Path, Path], ...] = ()  # (certificate, key)


def certs_folders(host: str, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The engine's folder for `host`, then the user's ($DOCKER_CONFIG/certs.d)."""
    user = docker_config_path(environ).parent / "certs.d"
    return (ENGINE_CERTS_DIR / host, user / host)


def find_certificates(folders: Iterable[Path]) -> HostCertificates:
    """docker's certs.d rules: every `*.crt` is a CA, every `*.cert` is a client certificate
    whose key is the `*.key` of the same name; a certificate or key without its other half
    is an error, as the engine refuses to push then too."""
    folders = tuple(folders)
    ca_files: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for folder in folders:
        try:
            names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(
                f"cannot read {folder}: {exc.strerror}", "check its permissions"
            ) from exc
        ca_files += [folder / name for name in names if name.endswith(".crt")]
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix == ".cert":
                if f"{stem}.key" not in names:
                    raise ConfigError(
                        f"{folder / name} has no key {stem}.key beside it",
                        "put the client certificate's key there, or rename a CA "
                        "certificate to *.crt",
                    )
                pairs.append((folder / name, folder / f"{stem}.key"))
            elif suffix == ".key" and f"{stem}.cert" not in names:
                raise ConfigError(
                    f"{folder / name} has no client certificate {stem}.cert beside it",
                    "put the certificate there, or remove the key",
                )
    return HostCertificates(folders, tuple(ca_files), tuple(pairs))


def _tls_context(certificates: HostCertificates) -> ssl.SSLContext:
    """The system's CAs, requests' CA bundle, the certs.d CAs, and the client certificate."""
    context = ssl.create_default_context()
    bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH
    if bundle and os.path.isfile(bundle):
        context.load_verify_locations(cafile=bundle)
    for path in certificates.ca_files:
        try:
            context.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot use {path} as a CA certificate: {_first_line(exc)}",
                "replace it with the registry's CA certificate in PEM",
            ) from exc
    for cert, key in certificates.client_pairs[:1]:
        try:
            context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot use the client certificate {cert} with {key.name}: {_first_line(exc)}",
                "put a PEM certificate and its own unencrypted key there",
            ) from exc
    return context


def _unverified_context() -> ssl.SSLContext:
    """TLS that checks nothing, as the engine speaks to an insecure registry. Made here, as
    urllib3 would otherwise load the system's CAs for every connection only to ignore them
    (some 30 ms each on a small machine)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


class _HostAdapter(requests.adapters.HTTPAdapter):
    """TLS for one registry host: its own SSL context (certs.d), or no verification at all
    for a registry the engine treats as insecure."""

    def __init__(self, context: ssl.SSLContext | None, *, verify: bool) -> None:
        self._context = context
        self._verify = verify
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if self._context is not None and verify is True:
            # The context holds requests' bundle already; loading it per connection is waste.
            conn.ca_certs = None
            conn.ca_cert_dir = None

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._verify:
            kwargs["verify"] = False
        return super().send(request, *args, **kwargs)


class _RegistrySession(requests.Session):
    """requests' Session, with the environment's proxies, but none for a loopback host."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings: Any = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if is_loopback(split_host(urlsplit(str(url)).netloc.rsplit("@", 1)[-1])[0]):
            settings["proxies"] = {}
        return settings


# ---------------------------------------------------------------------------------------
# One registry's transport
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFailure:
    """Why a TLS handshake with a registry failed, in one line, and what fixes it: an
    unknown CA (certs.d), a name the certificate does not hold, a plain-HTTP registry, or a
    client certificate the registry wants."""

    message: str
    hint: str


@dataclass(frozen=True)
class RegistryTransport:
    """How to reach one registry host, by the engine's rules."""

    host: str
    secure: bool
    rules_source: str
    certificates: HostCertificates

    @property
    def schemes(self) -> tuple[str, ...]:
        """What the engine tries, in order."""
        return ("https",) if self.secure else ("https", "http")

    @property
    def engine_folder(self) -> Path:
        return self.certificates.folders[0]

    def session(self, session: requests.Session | None = None) -> requests.Session:
        """A session set up for this host (the given one, or a new one)."""
        session = session if session is not None else _RegistrySession()
        prefix = f"https://{self.host}/"
        if not self.secure:
            hostname = split_host(self.host)[0]
            # The engine's choice, not an accident: no warning per request.
            warnings.filterwarnings(
                "ignore",
                message=f"Unverified HTTPS request is being made to host '{re.escape(hostname)}'",
                category=urllib3.exceptions.InsecureRequestWarning,
            )
            session.mount(prefix, _HostAdapter(_unverified_context(), verify=False))
        elif self.certificates.ca_files or self.certificates.client_pairs:
            session.mount(prefix, _HostAdapter(_tls_context(self.certificates), verify=True))
        return session

    def pick_scheme(self, session: requests.Session, timeout: float) -> str:
        """https for a secure registry. For an insecure one, https when it completes a TLS
        handshake, else http: the engine's order, one GET /v2/ to find out."""
        if self.secure:
            return "https"
        try:
            session.get(f"https://{self.host}/v2/", timeout=timeout, allow_redirects=False).close()
        except requests.exceptions.SSLError:
            return "http"
        except requests.ConnectionError as exc:
            # A plain server may hang up on a ClientHello instead of answering it.
            if any(isinstance(e, ConnectionResetError) for e in exception_chain(exc)):
                return "http"
            raise
        return "https"

    def tls_failure(self, chain: Iterable[BaseException]) -> TlsFailure | None:
        """The one line for a failed TLS handshake with a registry the engine verifies, None
        when the failure was something else (or the registry is an insecure one, which these
        rules do not bind)."""
        if not self.secure:
            return None
        chain = list(chain)
        errors = [e for e in chain if isinstance(e, ssl.SSLError)]
        text = " ".join(str(e) for e in chain)
        if not errors and "SSL" not in text:
            return None
        reasons = " ".join(str(getattr(e, "reason", "") or "") for e in errors) + " " + text
        host, folder = self.host, self.engine_folder
        if any(marker in reasons for marker in _NOT_TLS):
            return TlsFailure(
                f"registry {host} answers plain HTTP, and {self.rules_source} does not list "
                "it as an insecure registry",
                f'add "{host}" to "insecure-registries" in {DAEMON_JSON} and restart dockerd, '
                "or serve the registry over TLS",
            )
        verify = next((e for e in errors if isinstance(e, ssl.SSLCertVerificationError)), None)
        if verify is not None:
            return self._verify_failure(str(verify.verify_message or verify.reason or verify))
        if any(alert in reasons.upper() for alert in _CLIENT_CERT_ALERTS):
            pairs = self.certificates.client_pairs
            if not pairs:
                return TlsFailure(
                    f"registry {host} wants a TLS client certificate and none is set up",
                    f"put client.cert and client.key in {folder}/ "
                    f"(or {self.certificates.folders[-1]}/)",
                )
            return TlsFailure(
                f"registry {host} refused the client certificate {pairs[0][0]}",
                "use a client certificate signed by a CA that the registry trusts",
            )
        detail = _first_line(errors[0] if errors else chain[0])
        return TlsFailure(
            f"TLS handshake with registry {host} failed: {detail}",
            f"check the registry's certificate and the CA files in {folder}/",
        )

    def _verify_failure(self, detail: str) -> TlsFailure:
        host, folder = self.host, self.engine_folder
        lowered = detail.lower()
        if "mismatch" in lowered:
            return TlsFailure(
                f"the TLS certificate of registry {host} is not valid for "
                f"{split_host(host)[0]} ({detail.rstrip('.')})",
                "reissue it with that name or address among its subject alternative names",
            )
        if "expired" in lowered:
            return TlsFailure(f"the TLS certificate of registry {host} has expired", "renew it")
        trusted = " or ".join(str(path) for path in self.certificates.ca_files)
        signer = f"the CA in {trusted}" if trusted else "a CA that shipit or the engine trusts"
        return TlsFailure(
            f"the TLS certificate of registry {host} is not signed by {signer} ({detail})",
            f"put the registry's CA certificate in {folder}/ca.crt (the engine reads it there "
            f'too), or add "{host}" to "insecure-registries" in {DAEMON_JSON}',
        )


def transport_for(
    host: str,
    rules: RegistryRules | None = None,
    environ: Mapping[str, str] | None = None,
    resolve: Callable[[str], list[str]] = resolve_addresses,
) -> RegistryTransport:
    """The transport the engine's `rules` give `host` ("host:port" as the API is reached)."""
    rules = rules or RegistryRules.defaults()
    environ = os.environ if environ is None else environ
    folders = certs_folders(host, environ)
    secure = rules.is_secure(host, resolve)
    # The engine reads certs.d only for the registries it verifies.
    certificates = find_certificates(folders) if secure else HostCertificates(folders)
    return RegistryTransport(host, secure, rules.source, certificates)


def exception_chain(exc: BaseException) -> list[BaseException]:
    """exc and what it wraps: requests wraps urllib3, which wraps the socket error."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop()
        if any(item is other for other in seen):
            continue
        seen.append(item)
        nested = [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return seen


__all__ = [
    "DEFAULT_INSECURE_CIDRS",
    "ENGINE_CERTS_DIR",
    "HostCertificates",
    "RegistryRules",
    "RegistryTransport",
    "TlsFailure",
    "certs_folders",
    "exception_chain",
    "find_certificates",
    "resolve_addresses",
    "rules_for",
    "split_host",
    "transport_for",
]
