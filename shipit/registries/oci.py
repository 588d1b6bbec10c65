"""An OCI registry: Docker Hub, or any [[registries]] table. What tells them apart (the label,
the variables the credentials come from, the hints) is data of the catalogue's row.

Resolving one only reads: the credentials (registries/credentials.py has the rule). The
repository needs no preparing: a push to a new one creates it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipit.checks import Check, Probe
from shipit.errors import ConfigError, ShipitError
from shipit.registries.credentials import Credentials, default_credentials, entry_credentials
from shipit.registries.registry import RegistrySpec, Request, Target, connect
from shipit.registries.transport import rules_for

if TYPE_CHECKING:
    from shipit.registries.transport import RegistryRules


@dataclass(frozen=True)
class OciRegistry:
    spec: RegistrySpec

    names_iam_actions = False
    renewable = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def auth_hint(self) -> str:
        return self.spec.auth_hint

    def missing_repository(self) -> ConfigError:
        return ConfigError(
            f"no {self.spec.label} repository is set", self.spec.missing_repository_hint
        )

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """Variables named in shipit.toml must be set; variables of shipit's own (Docker
        Hub's) are one source among others."""
        spec = self.spec
        environ = os.environ if environ is None else environ
        if spec.username_env and not spec.variables_required:
            return default_credentials(
                spec.host, spec.username_env, spec.password_env, spec.credentials_hint, environ
            )
        return entry_credentials(
            spec.name, spec.host, spec.username_env, spec.password_env, environ
        )

    def resolve(
        self, request: Request, engine_rules: Callable[[], RegistryRules] | None = None
    ) -> Target:
        if not self.spec.repository:
            raise self.missing_repository()
        found = self.credentials(request.environ)
        return self._target(found, request, engine_rules)

    def _target(
        self,
        found: Credentials,
        request: Request,
        engine_rules: Callable[[], RegistryRules] | None,
    ) -> Target:
        host = self.spec.host
        rules = None if engine_rules is None else rules_for(host, engine_rules)
        return Target(
            registry=self,
            host=host,
            repository=self.spec.repository,
            login=found,
            mutability=self.spec.tag_mutability,
            client=connect(self, host, found, rules),
            request=request,
            notes=(f"credentials from {found.source}",),
            rules=rules,
        )

    def prepare(self, target: Target) -> Target:
        return target

    def renewed(self, target: Target) -> Target:
        raise ValueError(f"{self.name}'s login cannot be renewed")

    def looked_up_again(self, target: Target) -> Target:
        raise ValueError(f"{self.name}'s login comes from no cache")

    def immutable_tag_hint(self) -> str:
        return (
            f"set {self.spec.immutable_setting} so shipit leaves moving tags alone, or make "
            "the repository's tags mutable"
        )

    def doctor_checks(self, probe: Probe) -> list[Check]:
        spec = self.spec
        if spec.repository:
            repository = Check(f"{spec.name}_repository", "ok", f"{spec.repository} on {spec.host}")
        else:
            repository = Check.failed(f"{spec.name}_repository", self.missing_repository())
        credentials_name = f"{spec.name}_credentials"
        try:
            found: Credentials | None = self.credentials(probe.environ)
        except ShipitError as error:
            credentials, found = Check.failed(credentials_name, error), None
        else:
            assert found is not None
            credentials = Check(
                credentials_name,
                "ok",
                f"user {found.username} for {spec.host}, from {found.source}",
            )
        checks = [repository, credentials]
        if probe.online:
            probe.progress(f"doctor: logging in to {spec.host}")
            checks.append(self._login_check(found, probe))
        return checks

    def _login_check(self, found: Credentials | None, probe: Probe) -> Check:
        """Logs in as a push would (the same client: the registry's token service, for
        Docker Hub; the engine's rules for TLS and insecure registries), so a revoked or
        mistyped token, or a registry certificate that does not verify, shows up here rather
        than halfway through a ship."""
        name = f"{self.name}_login"
        if found is None:
            return Check.not_checked(name, f"no {self.name} credentials to log in with")
        try:
            target = self._target(found, Request(probe.environ), probe.engine_rules)
            try:
                target.client.ping()
            finally:
                target.close()
        except ShipitError as error:
            return Check.failed(name, error)
        return Check(name, "ok", f"{found.username} logged in to {self.spec.host}")
