"""A local evaluator of IAM identity policies.

It answers "would these policies, attached to a user, its groups or a role, let a request do
ACTION on RESOURCE?" as IAM does when only identity policies are involved: no resource
policies, SCPs, permission boundaries or session policies. Conditions and policy variables
depend on the request context, which a local check does not have, so a statement that needs
them is reported as "conditional" and is never silently counted as matching.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal, Protocol

from shipit.errors import ConfigError, UsageError

Verdict = Literal["allowed", "explicit_deny", "implicit_deny", "conditional"]
Effect = Literal["Allow", "Deny"]

SUPPORTED_VERSIONS = ("2012-10-17", "2008-10-17")
# IAM's default when Version is missing; that language has no policy variables.
_DEFAULT_VERSION = "2008-10-17"
_POLICY_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_SID = re.compile(r"[A-Za-z0-9]*")
_ACTION_PATTERN = re.compile(r"\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?]+")
_REQUEST_ACTION = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9]+")
_WILDCARDS = re.compile(r"(\*|\?)")
_WILDCARDS_AND_VARIABLES = re.compile(r"(\$\{[^}]*\}|\*|\?)")
# In the 2012-10-17 language these spell a literal character instead of a wildcard.
_ESCAPES = frozenset({"${*}", "${?}", "${$}"})


class _Match(Enum):
    NO = "no"
    YES = "yes"
    MAYBE = "maybe"  # depends on the request context: a Condition or a policy variable


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    has_variable: bool

    def match(self, value: str) -> _Match:
        if self.regex.fullmatch(value) is None:
            return _Match.NO
        # The variable was matched as "anything"; the real request may not fit it.
        return _Match.MAYBE if self.has_variable else _Match.YES


def _compile(text: str, *, ignore_case: bool, variables: bool) -> _Pattern:
    """IAM globbing: `*` and `?` only (no [classes]), across ':' and '/' alike."""
    splitter = _WILDCARDS_AND_VARIABLES if variables else _WILDCARDS
    parts: list[str] = []
    has_variable = False
    # re.split with one group alternates literal text (even) and the separators (odd).
    for position, piece in enumerate(splitter.split(text)):
        if position % 2 == 0:
            parts.append(re.escape(piece))
        elif piece in _ESCAPES:
            parts.append(re.escape(piece[2]))
        elif piece == "*":
            parts.append(".*")
        elif piece == "?":
            parts.append(".")
        else:
            has_variable = True
            parts.append(".*")
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return _Pattern(re.compile("".join(parts), flags), has_variable)


@dataclass(frozen=True)
class _PatternList:
    patterns: tuple[_Pattern, ...]
    negated: bool  # NotAction / NotResource: the statement covers everything else

    def match(self, value: str) -> _Match:
        results = {pattern.match(value) for pattern in self.patterns}
        found = next((m for m in (_Match.YES, _Match.MAYBE) if m in results), _Match.NO)
        if not self.negated or found is _Match.MAYBE:
            return found
        return _Match.NO if found is _Match.YES else _Match.YES


@dataclass(frozen=True)
class Statement:
    """One checked statement; `index` is its 0-based place in the policy's Statement list."""

    index: int
    sid: str | None
    effect: Effect
    actions: _PatternList
    resources: _PatternList
    has_condition: bool

    @property
    def label(self) -> str:
        return self.sid or f"Statement[{self.index}]"

    def applies_to(self, action: str, resource: str) -> _Match:
        matches = {self.actions.match(action), self.resources.match(resource)}
        if _Match.NO in matches:
            return _Match.NO
        if self.has_condition or _Match.MAYBE in matches:
            return _Match.MAYBE
        return _Match.YES


@dataclass(frozen=True)
class Policy:
    """A checked identity policy; `source` (its file name) names it in decisions."""

    source: str
    version: str
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class Decision:
    """IAM's answer for one request, and the statement that decided it (None if none did)."""

    action: str
    resource: str
    decision: Verdict
    statement: str | None
    source: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    def to_json(self) -> dict[str, str | None]:
        return {
            "action": self.action,
            "resource": self.resource,
            "decision": self.decision,
            "statement": self.statement,
            "source": self.source,
            "reason": self.reason,
        }


class AccessRequest(Protocol):
    """Anything with an action and a resource, such as actions.RequiredAccess."""

    @property
    def action(self) -> str: ...

    @property
    def resource(self) -> str: ...


def load_policy(path: str | Path) -> Policy:
    """Read and check an identity policy file; ConfigError says where it is wrong."""
    source = str(path)
    try:
        # utf-8-sig: editors on Windows like to start JSON files with a byte order mark.
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ConfigError(
            f"{source}: cannot read the policy file ({error.strerror or error})",
            "check the path of the policy file",
        ) from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{source}: byte {error.start} is not UTF-8", "save the policy as UTF-8 JSON"
        ) from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{source}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})",
            "fix the JSON at that position",
        ) from error
    return parse_policy(document, source)


def parse_policy(document: object, source: str) -> Policy:
    """Check a decoded policy document; `source` names it in errors and decisions."""
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: a policy must be a JSON object",
            'write {"Version": "2012-10-17", "Statement": [...]}',
        )
    if unknown := sorted(set(document) - _POLICY_KEYS):
        raise ConfigError(
            f"{source}: unknown policy element {', '.join(unknown)}",
            "use only Version, Id and Statement",
        )
    version = document.get("Version", _DEFAULT_VERSION)
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(
            f"{source}: Version {version!r} is not an IAM policy language version",
            'use "Version": "2012-10-17"',
        )
    raw_statements = document.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list):
        raise ConfigError(
            f"{source}: Statement is missing or is not an object or a list of objects",
            "add a Statement list",
        )
    statements = tuple(
        _parse_statement(raw, index, source, version) for index, raw in enumerate(raw_statements)
    )
    return Policy(source, version, statements)


def _parse_statement(raw: object, index: int, source: str, version: str) -> Statement:
    where = f"{source}: Statement[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a statement must be a JSON object", "fix the statement")
    sid = raw.get("Sid")
    if isinstance(sid, str) and sid:
        where += f" (Sid {sid!r})"
    if "Principal" in raw or "NotPrincipal" in raw:
        raise ConfigError(
            f"{where}: Principal is not allowed in an identity policy",
            "remove it; Principal belongs in resource policies such as a repository policy",
        )
    if unknown := sorted(set(raw) - _STATEMENT_KEYS):
        raise ConfigError(
            f"{where}: unknown statement element {', '.join(unknown)}",
            "use Sid, Effect, Action or NotAction, Resource or NotResource, and Condition",
        )
    if sid is not None and not (isinstance(sid, str) and _SID.fullmatch(sid)):
        raise ConfigError(f"{where}: Sid must be letters and digits only", "rename the Sid")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise ConfigError(
            f"{where}: Effect must be Allow or Deny, not {effect!r}",
            'write "Effect": "Allow" or "Effect": "Deny"',
        )
    actions = _parse_patterns(
        raw, "Action", where, _check_action, ignore_case=True, variables=False
    )
    resources = _parse_patterns(
        raw,
        "Resource",
        where,
        _check_resource,
        ignore_case=False,
        variables=version == "2012-10-17",
    )
    condition = raw.get("Condition", {})
    if not isinstance(condition, dict):
        raise ConfigError(f"{where}: Condition must be a JSON object", "fix the Condition")
    # An empty Condition block tests nothing, so the statement is unconditional.
    return Statement(index, sid or None, effect, actions, resources, bool(condition))


def _parse_patterns(
    raw: dict[str, object],
    element: str,
    where: str,
    check: Callable[[str, str], None],
    *,
    ignore_case: bool,
    variables: bool,
) -> _PatternList:
    negative = f"Not{element}"
    if element in raw and negative in raw:
        raise ConfigError(
            f"{where}: has both {element} and {negative}",
            f"keep only one of {element} and {negative}",
        )
    if element not in raw and negative not in raw:
        raise ConfigError(f"{where}: needs {element} or {negative}", f"add an {element} element")
    key = element if element in raw else negative
    value = raw[key]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ConfigError(
            f"{where}: {key} must be a string or a non-empty list of strings",
            f'write "{key}": "..." or "{key}": ["...", "..."]',
        )
    for text in texts:
        check(text, f"{where}: {key}")
    patterns = tuple(_compile(t, ignore_case=ignore_case, variables=variables) for t in texts)
    return _PatternList(patterns, negated=key == negative)


def _check_action(text: str, where: str) -> None:
    if _ACTION_PATTERN.fullmatch(text) is None:
        raise ConfigError(
            f"{where}: {text!r} is not an action of the form service:Action",
            "write actions such as ecr:PutImage or ecr:*",
        )


def _check_resource(text: str, where: str) -> None:
    if text != "*" and not text.startswith("arn:"):
        raise ConfigError(
            f"{where}: {text!r} is neither an ARN nor *",
            "write an ARN such as arn:aws:ecr:us-east-1:123456789012:repository/NAME",
        )


@dataclass(frozen=True)
class _Hit:
    source: str
    statement: Statement

    @property
    def context_needed(self) -> str:
        needed = "its Condition" if self.statement.has_condition else "a policy variable"
        return f"{needed}, which cannot be judged locally"

    def __str__(self) -> str:
        return f"{self.statement.label} in {self.source}"


def evaluate(policies: Sequence[Policy], action: str, resource: str) -> Decision:
    """IAM's decision for one request: explicit Deny, then Allow, else implicit deny."""
    _check_request(action, resource)
    # The first statement (policy order, then statement order) of each kind names the reason.
    first: dict[tuple[Effect, _Match], _Hit] = {}
    for policy in policies:
        for statement in policy.statements:
            match = statement.applies_to(action, resource)
            first.setdefault((statement.effect, match), _Hit(policy.source, statement))
    deny = first.get(("Deny", _Match.YES))
    conditional_deny = first.get(("Deny", _Match.MAYBE))
    allow = first.get(("Allow", _Match.YES))
    conditional_allow = first.get(("Allow", _Match.MAYBE))

    def decide(verdict: Verdict, hit: _Hit | None, reason: str) -> Decision:
        statement, source = (hit.statement.label, hit.source) if hit else (None, None)
        return Decision(action, resource, verdict, statement, source, reason)

    if deny:
        return decide("explicit_deny", deny, f"{deny} denies it, and a Deny beats any Allow")
    if allow and not conditional_deny:
        return decide("allowed", allow, f"{allow} allows it")
    # Without any Allow the request is denied whatever a conditional Deny would say.
    if conditional_deny and (allow or conditional_allow):
        return decide(
            "conditional",
            conditional_deny,
            f"{conditional_deny} may deny it, depending on {conditional_deny.context_needed}",
        )
    if conditional_allow:
        return decide(
            "conditional",
            conditional_allow,
            f"{conditional_allow} allows it only depending on {conditional_allow.context_needed}",
        )
    return decide("implicit_deny", None, "no statement allows it (implicit deny)")


def _check_request(action: str, resource: str) -> None:
    if _REQUEST_ACTION.fullmatch(action) is None:
        raise UsageError(
            f"action {action!r} is not one IAM action",
            "pass a single action such as ecr:PutImage (no wildcards)",
        )
    if resource != "*" and not resource.startswith("arn:"):
        raise UsageError(
            f"resource {resource!r} is neither an ARN nor *",
            "pass an ARN such as arn:aws:ecr:us-east-1:123456789012:repository/NAME",
        )


def evaluate_all(policies: Sequence[Policy], checks: Iterable[AccessRequest]) -> list[Decision]:
    """One decision per check, in the order of `checks`."""
    return [evaluate(policies, check.action, check.resource) for check in checks]


def all_allowed(decisions: Iterable[Decision]) -> bool:
    """True when every decision is "allowed" (conditional ones are not)."""
    return all(decision.allowed for decision in decisions)
