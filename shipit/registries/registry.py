"""What push, ship and doctor ask of a registry, whatever its kind, and a registry resolved for
one push.

A `Registry` is one kind's behaviour (registries/ecr_registry.py, registries/oci.py) over one
row of the catalogue (registries/catalog.py picks the kind). Resolving it gives a `Target`: a
frozen value with the login, the registry's answers about the repository, and the one API
client of the push. Nothing changes a Target: preparing its repository, renewing its token or
looking it up again gives a new one, which keeps the same client where the host is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

from shipit.json_fields import fields_of
from shipit.registries.credentials import Credentials
from shipit.registries.distribution import RegistryClient

if TYPE_CHECKING:
    from shipit.checks import Check, Probe
    from shipit.registries.ecr import Ecr
    from shipit.registries.ecr_cache import EcrCacheSlot
    from shipit.registries.transport import RegistryRules


RegistryKind = Literal["ecr", "oci"]


@dataclass(frozen=True)
class RegistrySpec:
    """One row of the catalogue: a registry as shipit.toml and the environment configure it,
    with what people read about it."""

    name: str
    kind: RegistryKind
    # "" for ECR without ecr_registry: the host comes with the authorization token.
    host: str
    repository: str  # the path inside the registry, e.g. acme/site
    credential_source: str  # where the credentials will come from, for people
    tag_mutability: str = "MUTABLE"
    username_env: str = ""
    password_env: str = ""
    # Set when shipit.toml named the variables: unset, they are an error rather than a reason
    # to look for what `docker login` stored.
    variables_required: bool = False
    label: str = ""  # how people call it: "Docker Hub", or a [[registries]] name
    auth_hint: str = ""  # what to do when the registry refuses the login
    credentials_hint: str = ""  # what to do when no credentials are found
    missing_repository_hint: str = ""
    # The setting that tells shipit the repository's tags are immutable.
    immutable_setting: str = ""

    @property
    def reference(self) -> str:
        """host/repository, or the repository alone while ECR's host is not known yet."""
        return f"{self.host}/{self.repository}" if self.host else self.repository

    def to_json(self) -> dict[str, str]:
        return fields_of(self, "name", "kind", "host", "repository", "credential_source")


@dataclass(frozen=True)
class Request:
    """What a push asks of its registries: where the credentials come from, whether it only
    plans (a dry run creates nothing), and whether the AWS root user may push."""

    environ: Mapping[str, str]
    dry_run: bool = False
    allow_root: bool = False


class Registry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def auth_hint(self) -> str:
        """What to do when the registry refuses the login (an AuthError's hint)."""
        ...

    @property
    def names_iam_actions(self) -> bool:
        """Whether its refusals stand for AWS IAM actions, which shipit can name."""
        ...

    @property
    def renewable(self) -> bool:
        """Whether an expired login can be renewed during the push."""
        ...

    def resolve(
        self, request: Request, engine_rules: Callable[[], RegistryRules] | None = None
    ) -> Target:
        """The login and the repository's facts; reads only (a missing repository is made by
        `prepare`, once the image has passed its smoke test)."""
        ...

    def prepare(self, target: Target) -> Target:
        """The target once its repository exists (created now if it was missing)."""
        ...

    def renewed(self, target: Target) -> Target:
        """The target with a fresh login (only when `renewable`)."""
        ...

    def looked_up_again(self, target: Target) -> Target:
        """A target from a cache, resolved again without it and prepared (only when
        `target.cached`): for a refusal that a stale cache entry would explain."""
        ...

    def immutable_tag_hint(self) -> str:
        """What to do when the registry refuses to move a tag."""
        ...

    def doctor_checks(self, probe: Probe) -> list[Check]: ...


@dataclass(frozen=True)
class AwsAccess:
    """ECR's AWS clients of one resolution, which create its repository and renew its token,
    and the token cache slot their answers go to (None: not cached)."""

    ecr: Ecr = field(repr=False)
    cache: EcrCacheSlot | None = field(repr=False)


@dataclass(frozen=True)
class Target:
    registry: Registry
    host: str
    repository: str
    login: Credentials = field(repr=False)
    mutability: str
    # The one API client of this registry for the whole push: a new client would answer the
    # auth challenge (and fetch a Bearer token) all over again.
    client: RegistryClient = field(repr=False, compare=False)
    request: Request = field(repr=False)
    notes: tuple[str, ...] = ()
    # From the ECR token cache: resolved again through AWS for a refusal that a stale entry
    # would explain (a token or repository gone, a changed tag mutability).
    cached: bool = False
    # The repository does not exist yet: `Registry.prepare` creates it, at the first push, as
    # the target may be resolved while the image is still being smoke-tested, and a failed
    # test must change nothing.
    missing: bool = False
    # The engine's rules for registry hosts (insecure registries), for shipit's own client.
    rules: RegistryRules | None = field(default=None, repr=False)
    aws: AwsAccess | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.registry.name

    @property
    def reference(self) -> str:
        return f"{self.host}/{self.repository}"

    def with_login(self, login: Credentials) -> Target:
        """The same target and client with another login (a renewed token): the tokens the
        client got with the old one go."""
        self.client.use_credentials(login)
        return replace(self, login=login)

    def close(self) -> None:
        self.client.close()


def connect(
    registry: Registry, host: str, login: Credentials, rules: RegistryRules | None
) -> RegistryClient:
    """The client a target of `registry` at `host` talks through."""
    return RegistryClient(host, login, auth_hint=registry.auth_hint, rules=rules)
