"""A local evaluator of IAM identity policies.

It answers "would these policies, attached to a user, its groups or a role, let a request do
ACTION on RESOURCE?" as IAM does when only identity policies are involved: no resource
policies, SCPs, permission boundaries or session policies. Conditions and policy variables
depend on the request context: given one (conditions.RequestContext) they are judged as IAM
judges them; without one, a statement that needs them is reported as "conditional" and is
never silently counted as matching. A Resource or NotResource that is not a well-formed ARN
(`arn:aws:sqs`) is matched differently by different evaluators, so a decision that depends on
one is "undecided", never "allowed".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

from shipit.errors import UsageError
from shipit.iam.conditions import (
    QUESTION,
    STAR,
    ConditionResult,
    ConditionTest,
    RequestContext,
    Token,
    Variable,
    glob_regex,
    has_variables,
    tokenize,
)
from shipit.json_fields import fields_of

Verdict = Literal["allowed", "explicit_deny", "implicit_deny", "conditional", "undecided"]
Effect = Literal["Allow", "Deny"]

_REQUEST_ACTION = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9]+")

# AWS answers sts:GetCallerIdentity for any caller, even under an explicit Deny.
NO_PERMISSION_ACTIONS = frozenset({"sts:getcalleridentity"})


class _Match(Enum):
    NO = "no"
    YES = "yes"
    MAYBE = "maybe"  # depends on the request context: a Condition or a policy variable
    UNDECIDED = "undecided"  # a pattern that is not a well-formed ARN: no sure answer


@dataclass(frozen=True)
class _Pattern:
    """One Action or Resource glob; `*` and `?` only (no [classes]), across ':' and '/'."""

    text: str
    tokens: tuple[Token, ...]
    ignore_case: bool
    malformed: bool = False  # a resource that is neither * nor an ARN of six parts

    @property
    def has_variable(self) -> bool:
        return has_variables(self.tokens)

    def match(self, value: str, context: RequestContext | None) -> _Match:
        if self.malformed:
            return _Match.UNDECIDED
        regex = glob_regex(self.tokens, context, ignore_case=self.ignore_case)
        if regex is None or regex.fullmatch(value) is None:
            return _Match.NO
        # Without a request, a variable was matched as "anything"; the request may not fit.
        return _Match.MAYBE if context is None and self.has_variable else _Match.YES


def _shape(token: Token) -> str:
    """A wildcard as "*"; literal text (a ${*} escape, a variable's value) without any."""
    if isinstance(token, Variable):
        return "x"
    if token in (STAR, QUESTION):
        return "*"
    return token.replace("*", "x").replace("?", "x")


def arn_parts(tokens: Sequence[Token]) -> list[str]:
    """The six parts of an ARN pattern (fewer when it has fewer); a variable is one name."""
    return "".join(_shape(token) for token in tokens).split(":", 5)


def compile_pattern(text: str, *, ignore_case: bool, variables: bool, arn: bool) -> _Pattern:
    tokens = tokenize(text, variables=variables, wildcards=True)
    malformed = arn and text != "*" and len(arn_parts(tokens)) < 6
    return _Pattern(text, tokens, ignore_case, malformed)


@dataclass(frozen=True)
class PatternList:
    patterns: tuple[_Pattern, ...]
    negated: bool  # NotAction / NotResource: the statement covers everything else

    @property
    def malformed(self) -> tuple[str, ...]:
        return tuple(pattern.text for pattern in self.patterns if pattern.malformed)

    def match(self, value: str, context: RequestContext | None) -> _Match:
        results = {pattern.match(value, context) for pattern in self.patterns}
        # One sure match decides the list; short of that, an undecided pattern leaves the
        # whole list undecided, whatever the others say.
        found = next(
            (m for m in (_Match.YES, _Match.UNDECIDED, _Match.MAYBE) if m in results), _Match.NO
        )
        if not self.negated or found in (_Match.MAYBE, _Match.UNDECIDED):
            return found
        return _Match.NO if found is _Match.YES else _Match.YES


@dataclass(frozen=True)
class Statement:
    """One checked statement; `index` is its 0-based place in the policy's Statement list."""

    index: int
    sid: str | None
    effect: Effect
    actions: PatternList
    resources: PatternList
    conditions: tuple[ConditionTest, ...] = ()
    matches_nothing: bool = False  # see _wildcard_in_resource_type

    @property
    def label(self) -> str:
        return self.sid or f"Statement[{self.index}]"

    @property
    def has_condition(self) -> bool:
        return bool(self.conditions)

    def applies_to(
        self, action: str, resource: str, context: RequestContext | None = None
    ) -> tuple[_Match, tuple[ConditionResult, ...]]:
        """Whether the statement covers the request, and how its Condition came out.

        With a context every key is judged: all must hold (AND between keys; OR between
        the values of one key is the operator's business). The results are those that
        decided: all of them when they hold, else the first that does not.
        """
        if self.matches_nothing:
            return _Match.NO, ()
        matches = {self.actions.match(action, None), self.resources.match(resource, context)}
        if _Match.NO in matches:
            return _Match.NO, ()
        # A Condition that fails still rules the statement out; else nothing can rule it in.
        sure = _Match.UNDECIDED if _Match.UNDECIDED in matches else _Match.YES
        if context is None:
            unknown = self.has_condition or _Match.MAYBE in matches
            return (_Match.MAYBE if unknown and sure is _Match.YES else sure), ()
        results: list[ConditionResult] = []
        for test in self.conditions:
            result = test.evaluate(context)
            if not result.holds:
                return _Match.NO, (result,)
            results.append(result)
        return sure, tuple(results)


@dataclass(frozen=True)
class Policy:
    """A checked identity policy; `source` (its file name) names it in decisions."""

    source: str
    version: str
    statements: tuple[Statement, ...]
    # Things IAM accepts but that do not do what they seem to (a wildcard resource type).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """IAM's answer for one request, and the statement that decided it (None if none did)."""

    action: str
    resource: str
    decision: Verdict
    statement: str | None
    source: str | None
    reason: str
    # The Condition tests of `statement` that decided, with the request's values.
    conditions: tuple[ConditionResult, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    def to_json(self) -> dict[str, Any]:
        return {
            **fields_of(self, "action", "resource", "decision", "statement", "source", "reason"),
            "conditions": [result.to_json() for result in self.conditions],
        }


class AccessRequest(Protocol):
    """Anything with an action and a resource, such as actions.RequiredAccess."""

    @property
    def action(self) -> str: ...

    @property
    def resource(self) -> str: ...


@dataclass(frozen=True)
class _Hit:
    source: str
    statement: Statement
    conditions: tuple[ConditionResult, ...] = ()

    @property
    def undecided(self) -> str:
        resources = self.statement.resources
        key = "NotResource" if resources.negated else "Resource"
        patterns = ", ".join(repr(text) for text in resources.malformed)
        return f"its {key} {patterns} is not a well-formed ARN"

    @property
    def context_needed(self) -> str:
        needed = "its Condition" if self.statement.has_condition else "a policy variable"
        return f"{needed}, which needs the request context (--context KEY=VALUE)"

    @property
    def because(self) -> str:
        return "; ".join(result.describe() for result in self.conditions)

    def __str__(self) -> str:
        return f"{self.statement.label} in {self.source}"


def evaluate(
    policies: Sequence[Policy],
    action: str,
    resource: str,
    context: RequestContext | None = None,
) -> Decision:
    """IAM's decision for one request: explicit Deny, then Allow, else implicit deny.

    With `context` (the request's condition keys) every Condition and policy variable is
    judged; without it a statement that depends on them is only "conditional".
    """
    _check_request(action, resource)
    if action.lower() in NO_PERMISSION_ACTIONS:
        return Decision(
            action,
            resource,
            "allowed",
            None,
            None,
            f"{action} needs no permission: AWS answers it even under an explicit Deny",
        )
    # The first statement (policy order, then statement order) of each kind names the reason.
    first: dict[tuple[Effect, _Match], _Hit] = {}
    # An Allow that covers the request but whose Condition does not hold, to say why not.
    failed_allow: _Hit | None = None
    for policy in policies:
        for statement in policy.statements:
            match, results = statement.applies_to(action, resource, context)
            hit = _Hit(policy.source, statement, results)
            first.setdefault((statement.effect, match), hit)
            if match is _Match.NO and results and statement.effect == "Allow":
                failed_allow = failed_allow or hit
    deny = first.get(("Deny", _Match.YES))
    conditional_deny = first.get(("Deny", _Match.MAYBE))
    allow = first.get(("Allow", _Match.YES))
    conditional_allow = first.get(("Allow", _Match.MAYBE))
    undecided_deny = first.get(("Deny", _Match.UNDECIDED))
    undecided_allow = first.get(("Allow", _Match.UNDECIDED))

    def decide(verdict: Verdict, hit: _Hit | None, reason: str) -> Decision:
        if hit is None:
            return Decision(action, resource, verdict, None, None, reason)
        return Decision(
            action, resource, verdict, hit.statement.label, hit.source, reason, hit.conditions
        )

    if deny:
        when = f" ({deny.because})" if deny.conditions else ""
        return decide("explicit_deny", deny, f"{deny} denies it{when}, and a Deny beats any Allow")
    # Without any Allow the request is denied whatever an undecided Deny would do.
    if undecided_deny and (allow or conditional_allow or undecided_allow):
        return decide(
            "undecided",
            undecided_deny,
            f"{undecided_deny} may deny it, and cannot be decided: {undecided_deny.undecided}",
        )
    if allow and not conditional_deny:
        when = f" ({allow.because})" if allow.conditions else ""
        return decide("allowed", allow, f"{allow} allows it{when}")
    # Without any Allow the request is denied whatever a conditional Deny would say.
    if conditional_deny and (allow or conditional_allow):
        return decide(
            "conditional",
            conditional_deny,
            f"{conditional_deny} may deny it, depending on {conditional_deny.context_needed}",
        )
    if undecided_allow:
        return decide(
            "undecided",
            undecided_allow,
            f"{undecided_allow} may allow it, but cannot be decided: {undecided_allow.undecided}",
        )
    if conditional_allow:
        return decide(
            "conditional",
            conditional_allow,
            f"{conditional_allow} allows it only depending on {conditional_allow.context_needed}",
        )
    if failed_allow:
        return decide(
            "implicit_deny",
            failed_allow,
            f"no statement allows it (implicit deny): {failed_allow} would, but "
            f"{failed_allow.because}",
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


def evaluate_all(
    policies: Sequence[Policy],
    checks: Iterable[AccessRequest],
    context: RequestContext | None = None,
) -> list[Decision]:
    """One decision per check, in the order of `checks`."""
    return [evaluate(policies, check.action, check.resource, context) for check in checks]


def all_allowed(decisions: Iterable[Decision]) -> bool:
    """True when every decision is "allowed" (conditional and undecided ones are not)."""
    return all(decision.allowed for decision in decisions)
