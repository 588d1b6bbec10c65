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

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Protocol

from shipit.errors import ConfigError, UsageError
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
    parse_condition,
    tokenize,
)

Verdict = Literal["allowed", "explicit_deny", "implicit_deny", "conditional", "undecided"]
Effect = Literal["Allow", "Deny"]

SUPPORTED_VERSIONS = ("2012-10-17", "2008-10-17")
# IAM's default when Version is missing; that language has no policy variables.
_DEFAULT_VERSION = "2008-10-17"
_POLICY_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_SID = re.compile(r"[A-Za-z0-9]*")
# IAM refuses a wildcard in the service prefix (`*:GetBucket`, `s3*:Get*`).
_ACTION_PATTERN = re.compile(r"\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+")
_REQUEST_ACTION = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9]+")

# AWS answers sts:GetCallerIdentity for any caller, even under an explicit Deny.
NO_PERMISSION_ACTIONS = frozenset({"sts:getcalleridentity"})

# IAM counts policy size without white space. 10,240 is the most any identity policy may
# hold (a role's inline policy); a managed policy holds 6,144, a user's inline one 2,048.
MAX_POLICY_CHARACTERS = 10_240
MANAGED_POLICY_CHARACTERS = 6_144

# Most ARNs name a resource type before the first '/' or ':' of their resource part, but
# these start it with a name (bucket, queue, topic, API id), where a wildcard is fine.
_UNTYPED_SERVICES = frozenset({"s3", "sqs", "sns", "execute-api"})
# Services whose every ARN names a resource type first (user/, repository/, instance/...),
# so a bare `u*` there, without any separator, is a wildcard in the type.
_TYPED_SERVICES = frozenset(
    {
        "acm",
        "autoscaling",
        "cloudformation",
        "cloudwatch",
        "codebuild",
        "dynamodb",
        "ec2",
        "ecr",
        "ecs",
        "eks",
        "elasticloadbalancing",
        "events",
        "iam",
        "kms",
        "lambda",
        "logs",
        "rds",
        "route53",
        "secretsmanager",
        "ssm",
        "states",
        "sts",
    }
)


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


def _compile(text: str, *, ignore_case: bool, variables: bool, arn: bool) -> _Pattern:
    tokens = tokenize(text, variables=variables, wildcards=True)
    malformed = arn and text != "*" and len(_arn_parts(tokens)) < 6
    return _Pattern(text, tokens, ignore_case, malformed)


@dataclass(frozen=True)
class _PatternList:
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
    actions: _PatternList
    resources: _PatternList
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
            "action": self.action,
            "resource": self.resource,
            "decision": self.decision,
            "statement": self.statement,
            "source": self.source,
            "reason": self.reason,
            "conditions": [result.to_json() for result in self.conditions],
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
    policy = parse_policy(document, source)
    size = policy_size(text)
    if size > MAX_POLICY_CHARACTERS:
        raise ConfigError(
            f"{source}: {size} characters without white space, more than IAM accepts in any "
            f"identity policy ({MAX_POLICY_CHARACTERS})",
            "split it into several policies (pass each with --policy) or use wildcards",
        )
    if size > MANAGED_POLICY_CHARACTERS:
        warning = (
            f"{source}: {size} characters without white space: too long for a managed "
            f"policy ({MANAGED_POLICY_CHARACTERS}); only a role's inline policy holds it"
        )
        policy = Policy(
            policy.source, policy.version, policy.statements, (*policy.warnings, warning)
        )
    return policy


def policy_size(text: str) -> int:
    """The size IAM measures a policy by: its characters without white space."""
    return sum(1 for character in text if not character.isspace())


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
    warnings: list[str] = []
    statements = tuple(
        _parse_statement(raw, index, source, version, warnings)
        for index, raw in enumerate(raw_statements)
    )
    return Policy(source, version, statements, tuple(warnings))


def _parse_statement(
    raw: object, index: int, source: str, version: str, warnings: list[str]
) -> Statement:
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
    variables = version == "2012-10-17"
    resources = _parse_patterns(
        raw, "Resource", where, _check_resource, ignore_case=False, variables=variables
    )
    key = "NotResource" if resources.negated else "Resource"
    for text in resources.malformed:
        warnings.append(
            f"{where}: {key} {text!r} is not a well-formed ARN "
            "(arn:partition:service:region:account:resource): shipit cannot tell what it "
            "matches, so a decision that depends on it is undecided"
        )
    # The ARN identifiers page forbids a wildcard in the resource type
    # (`arn:aws:iam::123456789012:u*`). A plain glob would match every user, role and
    # policy there: a false allow. Such a statement matches nothing instead.
    void = [p.text for p in resources.patterns if _wildcard_in_resource_type(p.tokens)]
    for text in void:
        warnings.append(
            f"{where}: {key} {text!r} has a wildcard in its resource type, which IAM does "
            "not allow: the statement matches nothing"
        )
    # An empty Condition block tests nothing, so the statement is unconditional.
    conditions = parse_condition(raw.get("Condition", {}), where, variables=variables)
    return Statement(index, sid or None, effect, actions, resources, conditions, bool(void))


def _shape(token: Token) -> str:
    """A wildcard as "*"; literal text (a ${*} escape, a variable's value) without any."""
    if isinstance(token, Variable):
        return "x"
    if token in (STAR, QUESTION):
        return "*"
    return token.replace("*", "x").replace("?", "x")


def _arn_parts(tokens: Sequence[Token]) -> list[str]:
    """The six parts of an ARN pattern (fewer when it has fewer); a variable is one name."""
    return "".join(_shape(token) for token in tokens).split(":", 5)


def _wildcard_in_resource_type(tokens: Sequence[Token]) -> bool:
    parts = _arn_parts(tokens)
    if len(parts) < 6 or parts[5] == "*":
        return False
    resource = parts[5]
    service = parts[2].lower()
    separator = re.search(r"[/:]", resource)
    if service in _UNTYPED_SERVICES or "*" in service:
        return False
    if separator is not None:
        resource_type = resource[: separator.start()]
    elif service in _TYPED_SERVICES:
        resource_type = resource
    else:
        return False
    return "*" in resource_type


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
    arn = element == "Resource"
    patterns = tuple(
        _compile(t, ignore_case=ignore_case, variables=variables, arn=arn) for t in texts
    )
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
