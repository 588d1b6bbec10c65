"""Targets for tests of the push's steps and retry rules, without resolving a registry: an
OCI registry of the catalogue's shape, or a stand-in kind that renews logins and looks targets
up again on its own (no AWS) and counts how often it did."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shipit.checks import Check, Probe
from shipit.registries.credentials import Credentials
from shipit.registries.oci import OciRegistry
from shipit.registries.registry import (
    Registry,
    RegistrySpec,
    Request,
    Target,
    connect,
)


def oci_registry(name: str = "dockerhub", host: str = "registry.example") -> OciRegistry:
    return OciRegistry(
        RegistrySpec(name=name, kind="oci", host=host, repository="", credential_source="test")
    )


def target_of(
    registry: Registry,
    host: str = "127.0.0.1:5000",
    repository: str = "site",
    login: Credentials | None = None,
    *,
    mutability: str = "MUTABLE",
    cached: bool = False,
    notes: tuple[str, ...] = (),
) -> Target:
    login = login or Credentials("")
    return Target(
        registry=registry,
        host=host,
        repository=repository,
        login=login,
        mutability=mutability,
        client=connect(registry, host, login, None),
        request=Request({}),
        notes=notes,
        cached=cached,
    )


@dataclass(frozen=True)
class StandInRegistry:
    """ECR's part in the retry rules: a renewed login is `token-2`, `token-3`, ...; a target
    looked up again is `fresh`. `calls` says what was asked, in order."""

    name: str = "ecr"
    auth_hint: str = "check the ECR permissions"
    names_iam_actions: bool = True
    renewable: bool = True
    fresh: Target | None = None
    calls: list[str] = field(default_factory=list)

    def resolve(self, request: Request, engine_rules: object = None) -> Target:
        raise NotImplementedError("a stand-in is never resolved")

    def prepare(self, target: Target) -> Target:
        return target

    def renewed(self, target: Target) -> Target:
        self.calls.append("renewed")
        token = f"token-{self.calls.count('renewed') + 1}"
        return target.with_login(Credentials(target.login.username, token))

    def looked_up_again(self, target: Target) -> Target:
        self.calls.append("looked up")
        assert self.fresh is not None
        return replace(self.fresh, notes=(*self.fresh.notes, "looked up again"))

    def immutable_tag_hint(self) -> str:
        return "make the tags mutable"

    def doctor_checks(self, probe: Probe) -> list[Check]:
        return []
