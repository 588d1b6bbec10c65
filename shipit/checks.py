"""One finding of `shipit doctor`, and what a registry's own checks are given to look with.

Here rather than in doctor.py because each registry kind (registries/oci.py,
registries/ecr_registry.py) makes its own checks, and doctor.py loops over the registries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shipit.errors import ShipitError
from shipit.json_fields import fields_of
from shipit.progress import Progress, quiet

if TYPE_CHECKING:
    from shipit.aws import CallerIdentity
    from shipit.registries.transport import RegistryRules

Outcome = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""

    @classmethod
    def failed(cls, name: str, error: ShipitError) -> Check:
        return cls(name, "fail", error.message, error.hint)

    @classmethod
    def not_checked(cls, name: str, because: str) -> Check:
        return cls(name, "warn", f"not checked: {because}")

    def one_line(self) -> str:
        return f"{self.detail}; {self.hint}" if self.hint else self.detail

    def to_json(self) -> dict[str, str]:
        return fields_of(self, "name", "outcome", "detail", "hint")


@dataclass(frozen=True)
class Probe:
    """What doctor hands every registry's checks: the environment its credentials come from,
    the engine's rules for registry hosts (None without an engine), whether to go online
    (log in; ask IAM), and, online, IAM's verdict for an AWS caller (doctor's, as the iam
    package sits beside the registries, not below them)."""

    environ: Mapping[str, str]
    engine_rules: Callable[[], RegistryRules] | None = None
    online: bool = False
    progress: Progress = quiet
    iam_verdict: Callable[[CallerIdentity | None], Check] | None = None
