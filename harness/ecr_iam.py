"""ECR's per-call IAM, in front of a loopback registry: a stand-in that refuses what a policy
does not grant.

Real ECR authorises every Registry API call by an IAM action on the repository ARN (AWS's
"required IAM permissions" pages); a plain Distribution registry with htpasswd allows them
all, so a push that needs an action the printed policy lacks would pass every test. This
proxy maps each v2 request to its action, judges it against one IAM identity policy and
answers a refusal as ECR does (403, code DENIED, AWS's sentence naming the action):

    proxy = EcrIamProxy("127.0.0.1", registry.port, policy_document).start()
    ... push to proxy.host ...
    proxy.actions_seen(), proxy.refused()
    proxy.stop()

It is a FaultProxy, so faults can be injected on the requests it lets through.

The evaluation is deliberately small and independent of shipit's own evaluator
(shipit/iam/evaluator.py), so that a bug there cannot hide here: Allow and Deny statements
with Action and Resource (a string or a list, `*` and `?` wildcards, actions case-blind),
explicit Deny first, default deny. A statement with NotAction, NotResource or a Condition is
refused when the policy is set (ValueError), since judging it would need the real thing.

moto's server can enforce IAM on the ECR API (DescribeRepositories, CreateRepository,
GetAuthorizationToken): `enforce_iam` turns its check on, once IAM users exist to sign with;
harness/moto_ecr_server.py makes it judge each action on its repository's ARN, as AWS does.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import requests

from harness.faultproxy import FaultProxy
from harness.services import MOTO_ACCOUNT

REGION = "us-east-1"
DEFAULT_USER = "shipit-ci"

_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
_MANIFEST = re.compile(r"/v2/(?P<name>.+)/manifests/[^/]+")
_UPLOAD = re.compile(r"/v2/(?P<name>.+)/blobs/uploads(?:/[^/]*)?")
_BLOB = re.compile(r"/v2/(?P<name>.+)/blobs/[a-z0-9]+:[a-f0-9]+")

_MANIFEST_ACTIONS = {
    "GET": "ecr:BatchGetImage",
    "HEAD": "ecr:BatchGetImage",
    "PUT": "ecr:PutImage",
    "DELETE": "ecr:BatchDeleteImage",
}
_BLOB_ACTIONS = {"HEAD": "ecr:BatchCheckLayerAvailability", "GET": "ecr:GetDownloadUrlForLayer"}
_UPLOAD_ACTIONS = {"PATCH": "ecr:UploadLayerPart", "PUT": "ecr:CompleteLayerUpload"}


@dataclass(frozen=True)
class Access:
    """One IAM action a request needs, on one repository ("*" for the whole registry)."""

    action: str
    repository: str


def needed_access(method: str, target: str, *, has_body: bool = False) -> tuple[Access, ...] | None:
    """What a v2 request (method, path with query; `has_body`: whether it carries bytes)
    needs; () for the token-only GET /v2/, None for a request ECR does not serve."""
    url = urlsplit(target)
    path, query = url.path, parse_qs(url.query)
    if path in ("/v2", "/v2/"):
        return () if method in ("GET", "HEAD") else None
    if path == "/v2/_catalog":
        # Every repository of the registry: only a grant on repository/* covers it.
        return (Access("ecr:DescribeRepositories", "*"),) if method == "GET" else None
    if match := _TAGS.fullmatch(path):
        return (Access("ecr:ListImages", match["name"]),) if method == "GET" else None
    if match := _MANIFEST.fullmatch(path):
        action = _MANIFEST_ACTIONS.get(method)
        return None if action is None else (Access(action, match["name"]),)
    if match := _UPLOAD.fullmatch(path):
        return _upload_access(method, match["name"], query, has_body=has_body)
    if match := _BLOB.fullmatch(path):
        action = _BLOB_ACTIONS.get(method)
        return None if action is None else (Access(action, match["name"]),)
    return None


def _upload_access(
    method: str, name: str, query: Mapping[str, list[str]], *, has_body: bool
) -> tuple[Access, ...] | None:
    if method == "POST":
        access = [Access("ecr:InitiateLayerUpload", name)]
        source = query.get("from", [""])[0]
        if "mount" in query and source:
            # ECR's blob mounting reads the layer of the repository it mounts from.
            access.append(Access("ecr:GetDownloadUrlForLayer", source))
        if "digest" in query:
            # A monolithic upload: the whole blob in the POST, finished at once.
            access += [Access("ecr:UploadLayerPart", name), Access("ecr:CompleteLayerUpload", name)]
        return tuple(access)
    if method == "PUT" and has_body:
        # The last part comes with the PUT that completes the upload (containerd sends the
        # whole blob so, after an empty POST).
        return (Access("ecr:UploadLayerPart", name), Access("ecr:CompleteLayerUpload", name))
    action = _UPLOAD_ACTIONS.get(method)
    return None if action is None else (Access(action, name),)


def without_mount(target: str) -> str:
    """The upload POST without its cross-repository mount parameters: what ECR makes of one
    while the registry's blob mounting is off (its default), a plain upload."""
    url = urlsplit(target)
    kept = [
        part
        for part in url.query.split("&")
        if part and part.split("=", 1)[0] not in ("mount", "from")
    ]
    return url.path + ("?" + "&".join(kept) if kept else "")


# ---------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(patterns: Sequence[str], value: str, *, ignore_case: bool) -> bool:
    if ignore_case:
        value = value.lower()
        patterns = [pattern.lower() for pattern in patterns]
    # fnmatchcase: * and ? as IAM means them; [ has no meaning in IAM, so escape it.
    return any(fnmatch.fnmatchcase(value, pattern.replace("[", "[[]")) for pattern in patterns)


@dataclass(frozen=True)
class _Statement:
    allow: bool
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def covers(self, action: str, resource: str) -> bool:
        return _matches(self.actions, action, ignore_case=True) and _matches(
            self.resources, resource, ignore_case=False
        )


def _statements(document: Mapping[str, Any]) -> tuple[_Statement, ...]:
    raw = document.get("Statement", [])
    statements = []
    for entry in [raw] if isinstance(raw, dict) else raw:
        unsupported = {"NotAction", "NotResource", "Condition", "NotPrincipal"} & set(entry)
        if unsupported:
            raise ValueError(f"the ECR stand-in does not judge {sorted(unsupported)}")
        statements.append(
            _Statement(
                allow=entry["Effect"] == "Allow",
                actions=tuple(_as_list(entry.get("Action", []))),
                resources=tuple(_as_list(entry.get("Resource", []))),
            )
        )
    return tuple(statements)


def decide(document: Mapping[str, Any], action: str, resource: str) -> str:
    """ "allowed", "explicit_deny" or "implicit_deny" for one request, as IAM orders them."""
    statements = _statements(document)
    if any(not s.allow and s.covers(action, resource) for s in statements):
        return "explicit_deny"
    if any(s.allow and s.covers(action, resource) for s in statements):
        return "allowed"
    return "implicit_deny"


# ---------------------------------------------------------------------------------------
# The proxy
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IamCall:
    """One action the stand-in judged: the request, the action and resource, the verdict."""

    method: str
    path: str
    action: str
    resource: str
    allowed: bool


class EcrIamProxy(FaultProxy):
    """ECR's Registry API authorisation in front of `upstream_host:upstream_port`.

    Requests without the registry's credentials go through unjudged, so the registry
    answers them with its challenge (authentication comes before authorisation, as on ECR);
    `credentials` is the (user, password) the registry accepts, None to judge any request
    that carries an Authorization header.

    `blob_mounting` is ECR's registry setting (BLOB_MOUNTING, off by default): off, a
    `?mount=&from=` POST is a plain upload (the parameters are dropped on the way to the
    registry, which answers 202); on, it also needs ecr:GetDownloadUrlForLayer on the source
    repository and is refused without it (some registries answer 202 instead; AWS does not
    document which ECR does, and a refusal is the case a client must survive).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        policy: Mapping[str, Any],
        *,
        credentials: tuple[str, str] | None = None,
        account: str = MOTO_ACCOUNT,
        region: str = REGION,
        user: str = DEFAULT_USER,
        blob_mounting: bool = False,
        port: int = 0,
    ) -> None:
        super().__init__(upstream_host, upstream_port, port)
        self.name = "ecr-iam"
        self.blob_mounting = blob_mounting
        self.account = account
        self.region = region
        self.principal = f"arn:aws:iam::{account}:user/{user}"
        self._basic = None
        if credentials is not None:
            raw = f"{credentials[0]}:{credentials[1]}".encode()
            self._basic = "Basic " + base64.b64encode(raw).decode("ascii")
        self._policy_lock = threading.Lock()
        self._policy: Mapping[str, Any] = {}
        self.calls: list[IamCall] = []
        self.set_policy(policy)

    def __repr__(self) -> str:
        where = self.host if self.running else "stopped"
        return f"EcrIamProxy({where} -> {self.upstream[0]}:{self.upstream[1]})"

    def set_policy(self, policy: Mapping[str, Any]) -> None:
        _statements(policy)  # refuses what it cannot judge now, not at the first request
        with self._policy_lock:
            self._policy = json.loads(json.dumps(policy))

    def repository_arn(self, repository: str) -> str:
        return f"arn:aws:ecr:{self.region}:{self.account}:repository/{repository}"

    def actions_seen(self) -> set[str]:
        with self._policy_lock:
            return {call.action for call in self.calls}

    def refused(self) -> list[IamCall]:
        with self._policy_lock:
            return [call for call in self.calls if not call.allowed]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        authorization = handler.headers.get("Authorization")
        if authorization is None or (self._basic is not None and authorization != self._basic):
            super().handle(handler)
            return
        if handler.command == "POST" and not self.blob_mounting:
            handler.path = without_mount(handler.path)
        has_body = (
            int(handler.headers.get("Content-Length") or 0) > 0
            or "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        )
        needed = needed_access(handler.command, handler.path, has_body=has_body)
        if needed is None:
            self._refuse(handler, 405, "UNSUPPORTED", "The operation is unsupported.")
            return
        for access in needed:
            resource = self.repository_arn(access.repository)
            with self._policy_lock:
                verdict = decide(self._policy, access.action, resource)
                self.calls.append(
                    IamCall(
                        handler.command,
                        urlsplit(handler.path).path,
                        access.action,
                        resource,
                        verdict == "allowed",
                    )
                )
            if verdict != "allowed":
                self._refuse(handler, 403, "DENIED", self._denial(access.action, resource, verdict))
                return
        super().handle(handler)

    def _denial(self, action: str, resource: str, verdict: str) -> str:
        why = (
            "with an explicit deny in an identity-based policy"
            if verdict == "explicit_deny"
            else f"because no identity-based policy allows the {action} action"
        )
        return (
            f"User: {self.principal} is not authorized to perform: {action} on resource: "
            f"{resource} {why}"
        )

    def _refuse(self, handler: BaseHTTPRequestHandler, status: int, code: str, text: str) -> None:
        self._drain_body(handler)
        body = json.dumps({"errors": [{"code": code, "message": text}]}).encode()
        self._reply(handler, status, body, "application/json; charset=utf-8")


# ---------------------------------------------------------------------------------------
# moto: IAM users, and IAM enforced on the AWS API
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessKey:
    user: str
    key_id: str
    secret: str = field(repr=False)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}


def create_user(
    endpoint_url: str,
    name: str,
    policy: Mapping[str, Any],
    *,
    signer: AccessKey | None = None,
    region: str = REGION,
) -> AccessKey:
    """An IAM user in moto with exactly `policy` inline, and an access key of its own.
    `signer`: the keys that may create it once IAM is enforced (None: moto's defaults)."""
    keys = signer or AccessKey("moto", "testing", "testing")
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=keys.key_id,
        aws_secret_access_key=keys.secret,
    )
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy)
    )
    created = iam.create_access_key(UserName=name)["AccessKey"]
    return AccessKey(name, created["AccessKeyId"], created["SecretAccessKey"])


def enforce_iam(endpoint_url: str) -> None:
    """From now on moto checks every AWS request's signature against its IAM users' keys,
    and the action against their policies. It stays on: use a moto server of your own."""
    requests.post(f"{endpoint_url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
