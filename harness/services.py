"""Real services for tests: a CNCF Distribution registry and moto's AWS endpoint.

Plain functions and context managers, no pytest here, so conftest.py can wrap them in
fixtures of any scope. Every service binds to 127.0.0.1 on a free port (a registry may bind
another address of this machine, and serve TLS), is polled until it answers (never a fixed
sleep) and leaves no process behind when stopped. A missing binary
is a RuntimeError, not a skip: a test suite that silently skips its integration tests
proves nothing.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3.exceptions

# cryptography comes with moto (a dev dependency); it signs the token service's JWTs.
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from harness.certs import CertificateSet
from harness.loopback import Background, HttpService, free_port

REGISTRY_BINARY = "/usr/bin/docker-registry"
TESTENV_HINT = "run scripts/testenv.sh (as root) to install it"
MOTO_ACCOUNT = "123456789012"


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `predicate` until it is true; AssertionError naming `what` after `timeout` s.

    Exceptions from the predicate count as "not yet" (a service that does not listen yet
    refuses connections); the last one is chained to the timeout error for diagnosis.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - "not ready yet" takes many shapes
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


def require_binary(path_or_name: str, package: str) -> str:
    """The absolute path of a binary, or a RuntimeError naming what installs it."""
    found = path_or_name if os.path.isabs(path_or_name) else shutil.which(path_or_name)
    if not found or not os.access(found, os.X_OK):
        raise RuntimeError(f"{path_or_name} not found (Debian package {package}); {TESTENV_HINT}")
    return found


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`command` in the background, its output appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`: a stuck service must not outlive the tests."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------
# Token service (Bearer auth, as Docker Hub does it)
# ---------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The `kid` Distribution looks a token's signing key up by (libtrust fingerprint):
    sha256 of the DER public key, truncated to 240 bits, base32 in 12 groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, 48, 4))


@dataclass(frozen=True)
class TokenRequest:
    """What the token service was asked, for tests of token caching."""

    account: str | None
    service: str
    scopes: tuple[str, ...]
    authenticated: bool


class TokenService(HttpService):
    """A Docker-style token service (https://distribution.github.io/distribution/spec/auth/token/)
    on 127.0.0.1, in a thread: Basic credentials in, ES256 JWT out.

    Known users get every action they ask for; anonymous callers get a token with no access
    (like a private repository on Docker Hub); a wrong password gets 401. As Docker Hub's auth
    server, it also takes a POST with an OAuth2 refresh token (grant_type=refresh_token): what
    `docker login` stores as an identitytoken, and an engine sends when given one.
    """

    methods = ("GET", "POST")

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        service: str = "shipit-test-registry",
        issuer: str = "shipit-test-token-service",
        expires_in: int = 300,
        port: int | None = None,
    ) -> None:
        # The realm goes into the registry's configuration before this starts.
        super().__init__(port or free_port(), name="token-service")
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []
        # refresh token -> account, for identity tokens
        self.refresh_tokens: dict[str, str] = {}
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = libtrust_key_id(self._key.public_key())
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenService(realm={self.realm!r}, users={sorted(self.users)!r})"

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def certificate_pem(self) -> bytes:
        """The self-signed certificate Distribution's `rootcertbundle` must hold."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, subject: str, scopes: Sequence[str], *, granted: bool) -> str:
        access = []
        for scope in scopes:
            # repository:name:actions; the name may itself hold a port-less path only.
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            access.append({"type": kind, "name": name, "actions": wanted if granted else []})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw r||s pair, not the DER the library produces.
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path != "/token":
            handler.send_error(404)
            return
        if handler.command == "POST":
            self._handle_refresh(handler)
            return
        query = parse_qs(url.query)
        scopes = tuple(query.get("scope", []))
        service = query.get("service", [""])[0]
        account: str | None = None
        authenticated = False
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(user) != password:
                self._reply(handler, 401, {"details": "incorrect username or password"})
                with self._lock:
                    self.requests.append(TokenRequest(user, service, scopes, False))
                return
            account, authenticated = user, True
        with self._lock:
            self.requests.append(TokenRequest(account, service, scopes, authenticated))
        token = self.issue(account or "", scopes, granted=authenticated)
        self._reply(
            handler,
            200,
            {"token": token, "access_token": token, "expires_in": self.expires_in},
        )

    def _handle_refresh(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = parse_qs(handler.rfile.read(length).decode())
        scopes = tuple(" ".join(form.get("scope", [])).split())
        service = form.get("service", [""])[0]
        account = self.refresh_tokens.get(form.get("refresh_token", [""])[0])
        if form.get("grant_type") != ["refresh_token"] or account is None:
            with self._lock:
                self.requests.append(TokenRequest(None, service, scopes, False))
            self._reply(handler, 401, {"error": "invalid_grant"})
            return
        with self._lock:
            self.requests.append(TokenRequest(account, service, scopes, True))
        token = self.issue(account, scopes, granted=True)
        self._reply(
            handler, 200, {"access_token": token, "expires_in": self.expires_in, "scope": ""}
        )

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


# ---------------------------------------------------------------------------------------
# Distribution registry
# ---------------------------------------------------------------------------------------

RegistryAuth = Literal["htpasswd", "token", "none"]


@dataclass
class RegistryService(Background):
    """A Distribution registry on 127.0.0.1 (or `address`: "::1", 10.251.0.1).

    `auth`: "htpasswd" (Basic, like ECR), "token" (Bearer from a TokenService in this
    process, like Docker Hub) or "none" (anonymous). `tls`: serve HTTPS with the server
    certificate of a harness.certs set (its SANs must name `address`); with
    `require_client_cert`, only clients with a certificate of the same CA get in. Use as a
    context manager, or call start()/stop()/close(). After stop(), start() brings it back
    on the same port with the same storage, so a test can take the registry down and then
    restore it.
    """

    auth: RegistryAuth = "htpasswd"
    username: str | None = "shipit"
    password: str | None = "s3cret-registry-pw"
    port: int = field(default_factory=free_port)
    root_dir: Path | None = None
    start_timeout: float = 20.0
    token_service: TokenService | None = field(default=None, repr=False)
    address: str = "127.0.0.1"
    tls: CertificateSet | None = None
    require_client_cert: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_root: bool = field(default=False, repr=False)
    _started: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.auth == "none":
            self.username = None
            self.password = None
        elif not self.username or not self.password:
            raise ValueError(f"a registry with {self.auth} auth needs a username and password")

    def __repr__(self) -> str:
        # Tests print fixtures on failure; the password must not end up in a CI log.
        return (
            f"RegistryService(host={self.host!r}, auth={self.auth!r}, "
            f"username={self.username!r}, root_dir={str(self.root_dir)!r}, "
            f"running={self.running})"
        )

    @property
    def anonymous(self) -> bool:
        return self.auth == "none"

    @property
    def host(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        assert self.root_dir is not None
        return self.root_dir / "config.yml"

    @property
    def log_path(self) -> Path:
        assert self.root_dir is not None
        return self.root_dir / "registry.log"

    def auth_config(self) -> dict[str, str]:
        """The auth_config docker-py takes for a push to this registry."""
        if self.anonymous:
            return {}
        assert self.username is not None and self.password is not None
        return {"username": self.username, "password": self.password}

    def _auth_section(self) -> str:
        assert self.root_dir is not None
        if self.auth == "none":
            return ""
        assert self.username is not None and self.password is not None
        if self.auth == "token":
            if self.token_service is None:
                self.token_service = TokenService({self.username: self.password})
            cert = self.root_dir / "token-cert.pem"
            cert.write_bytes(self.token_service.certificate_pem())
            return (
                "auth:\n"
                "  token:\n"
                f"    realm: {self.token_service.realm}\n"
                f"    service: {self.token_service.service}\n"
                f"    issuer: {self.token_service.issuer}\n"
                f'    rootcertbundle: "{cert}"\n'
            )
        htpasswd_bin = require_binary("htpasswd", "apache2-utils")
        # -B: Distribution ignores every htpasswd entry that is not bcrypt.
        entry = subprocess.run(
            [htpasswd_bin, "-Bbn", self.username, self.password],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        htpasswd = self.root_dir / "htpasswd"
        htpasswd.write_text(entry + "\n")
        return f'auth:\n  htpasswd:\n    realm: shipit-test-registry\n    path: "{htpasswd}"\n'

    def _write_config(self) -> None:
        assert self.root_dir is not None
        storage = self.root_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: warn\n"
            "  accesslog:\n"
            "    disabled: true\n"
            "storage:\n"
            "  filesystem:\n"
            f'    rootdirectory: "{storage}"\n'
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f'  addr: "{self.host}"\n' + self._tls_section() + self._auth_section()
        )

    def _tls_section(self) -> str:
        if self.tls is None:
            return ""
        server = self.tls.server
        section = f'  tls:\n    certificate: "{server.cert}"\n    key: "{server.key}"\n'
        if self.require_client_cert:
            section += f'    clientcas:\n      - "{server.ca}"\n'
        return section

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited with {self._proc.returncode} while starting on "
                f"{self.host}; log {self.log_path}:\n{_log_tail(self.log_path)}"
            )
        tls: dict[str, object] = {}
        if self.tls is not None:
            # Whether it is up, not whether its certificate suits (tests of that need both).
            tls["verify"] = False
            if self.require_client_cert:
                tls["cert"] = (str(self.tls.client.cert), str(self.tls.client.key))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = requests.get(f"{self.url}/v2/", timeout=1, **tls)  # type: ignore[arg-type]
        return response.status_code == (200 if self.anonymous else 401)

    def start(self) -> RegistryService:
        if self.running:
            return self
        binary = require_binary(REGISTRY_BINARY, "docker-registry")
        if self.root_dir is None:
            self.root_dir = Path(tempfile.mkdtemp(prefix="shipit-registry-"))
            self._own_root = True
        self._write_config()
        if self.token_service is not None:
            self.token_service.start()
        # The registry logs to stderr; level warn keeps the file short.
        self._proc = _spawn([binary, "serve", str(self.config_path)], self.log_path)
        try:
            wait_until(
                self._answers,
                self.start_timeout,
                what=f"docker-registry on {self.host} to answer GET /v2/",
            )
        except BaseException:
            # A failed first start must not leak the token thread or the tmp dir (no
            # __exit__ runs); a failed restart keeps the storage for diagnosis.
            if self._started:
                self.stop()
            else:
                self.close()
            raise
        self._started = True
        return self

    def stop(self) -> None:
        """Stop the registry process; keep storage, port and token service for start()."""
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None

    def close(self) -> None:
        """Stop everything and remove the storage this service created."""
        self.stop()
        if self.token_service is not None:
            self.token_service.stop()
        if self._own_root and self.root_dir is not None:
            shutil.rmtree(self.root_dir, ignore_errors=True)
            self.root_dir = None
            self._own_root = False


@contextmanager
def registry_down(registry: RegistryService) -> Iterator[RegistryService]:
    """Take a running registry down for the block and bring it back afterwards."""
    registry.stop()
    try:
        yield registry
    finally:
        registry.start()


# ---------------------------------------------------------------------------------------
# moto (AWS)
# ---------------------------------------------------------------------------------------


def moto_server_command() -> list[str]:
    """moto's server as harness/moto_ecr_server.py runs it: ECR tokens that expire 12 h after
    they are issued, as real ECR's do (stock moto says 2015)."""
    try:
        import moto.server  # noqa: F401 - only checks that moto[server] is installed
    except ImportError as error:
        raise RuntimeError(
            f"moto's server is not installed for {sys.executable}; install the dev "
            "dependencies (pip install -e '.[dev]', which brings moto[server])"
        ) from error
    return [sys.executable, str(Path(__file__).with_name("moto_ecr_server.py"))]


def moto_ecr_password(account: str = MOTO_ACCOUNT) -> str:
    """The registry password inside the ECR token moto hands out (`AWS:<password>`)."""
    return f"{account}-auth-token"


def decode_ecr_token(token: str) -> tuple[str, str]:
    """(user, password) from an ECR authorizationToken (base64 of `user:password`)."""
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def aws_env(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment for boto3 against moto.

    Apply with os.environ.update() (or monkeypatch) and remove the keys in
    `AWS_ENV_CLEARED`: a developer's AWS_PROFILE would otherwise make boto3 look for real
    credentials, and a session token would be sent along with the fake keys.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }


AWS_ENV_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@dataclass
class MotoService(Background):
    """moto_server on 127.0.0.1: a real HTTP endpoint that boto3 reaches via AWS_ENDPOINT_URL."""

    port: int = field(default_factory=free_port)
    start_timeout: float = 30.0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_log: bool = field(default=False, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self, region: str = "us-east-1") -> dict[str, str]:
        return aws_env(self.endpoint_url, region)

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client of this server, for a test that sets up what shipit will find."""
        import boto3

        env = self.env(region)
        return boto3.client(
            service,
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def reset(self) -> None:
        """Forget every resource moto holds, so tests sharing one server start clean."""
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=5).raise_for_status()

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            log = _log_tail(self.log_path) if self.log_path else ""
            raise RuntimeError(
                f"moto_server exited with {self._proc.returncode} while starting on port "
                f"{self.port}:\n{log}"
            )
        return requests.get(f"{self.endpoint_url}/moto-api/", timeout=1).status_code == 200

    def start(self) -> MotoService:
        if self.running:
            return self
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="shipit-moto-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
            self._own_log = True
        self._proc = _spawn(
            [*moto_server_command(), "-H", "127.0.0.1", "-p", str(self.port)], self.log_path
        )
        try:
            wait_until(
                self._answers,
                self.start_timeout,
                what=f"moto_server on {self.endpoint_url} to answer",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
            self._own_log = False
