"""IAM Condition blocks and policy variables, judged against a request context.

A request context maps condition keys (case-insensitive names such as aws:username) to one or
more values. `shipit iam check --context KEY=VALUE` builds one; with it, every Condition is
decided as IAM decides it, and a key the context does not name is absent from the request.
Pure logic: no boto3, no network.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from shipit.errors import ConfigError, UsageError

_CONTEXT_KEY = re.compile(r"[A-Za-z0-9_.-]+:[^\s=]+")
# ${key, 'default'}: the default is quoted, and '' inside it is one quote.
_VARIABLE_WITH_DEFAULT = re.compile(r"\s*([^,\s]+)\s*,\s*'((?:[^']|'')*)'\s*")
# In the 2012-10-17 language these spell a literal character instead of a wildcard.
_ESCAPES = {"${*}": "*", "${?}": "?", "${$}": "$"}
_WILDCARD_TOKENS = re.compile(r"(\$\{[^}]*\}|\*|\?)")
_PLAIN_WILDCARDS = re.compile(r"(\*|\?)")

SetOperator = Literal["ForAnyValue", "ForAllValues"]


class RequestContext:
    """The request's condition keys: names compare case-insensitively, values do not."""

    def __init__(self, entries: Mapping[str, Sequence[str]]) -> None:
        self._entries: dict[str, tuple[str, tuple[str, ...]]] = {}
        for key, values in entries.items():
            known = self._entries.get(key.lower())
            merged = (known[1] if known else ()) + tuple(values)
            self._entries[key.lower()] = (known[0] if known else key, merged)

    @classmethod
    def from_options(cls, options: Iterable[str]) -> RequestContext:
        """Parse `--context KEY=VALUE` options; a key given twice has several values."""
        entries: dict[str, list[str]] = {}
        for option in options:
            key, equals, value = option.partition("=")
            key = key.strip()
            if not equals or _CONTEXT_KEY.fullmatch(key) is None:
                raise UsageError(
                    f"--context {option!r} is not KEY=VALUE with a key such as aws:username",
                    "pass --context aws:username=alice (repeat --context for more keys "
                    "or for more values of one key)",
                )
            entries.setdefault(key, []).append(value)
        return cls(entries)

    def values(self, key: str) -> tuple[str, ...] | None:
        """The key's values, or None when the request does not have it."""
        found = self._entries.get(key.lower())
        return None if found is None else found[1]

    def single(self, key: str) -> str | None:
        """The value a policy variable takes: None when absent or multi-valued."""
        values = self.values(key)
        return values[0] if values is not None and len(values) == 1 else None

    def name(self, key: str) -> str:
        """The key as the context spelled it, for messages."""
        found = self._entries.get(key.lower())
        return key if found is None else found[0]

    def to_json(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in self._entries.values()}


# --- policy variables ----------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    key: str
    default: str | None

    @classmethod
    def parse(cls, inner: str) -> Variable:
        with_default = _VARIABLE_WITH_DEFAULT.fullmatch(inner)
        if with_default is not None:
            return cls(with_default.group(1), with_default.group(2).replace("''", "'"))
        return cls(inner.strip(), None)

    def resolve(self, context: RequestContext) -> str | None:
        value = context.single(self.key)
        return self.default if value is None else value


# A glob or text as tokens: literal text, "*" and "?" wildcards, or a policy variable.
# The wildcards carry a NUL so that a literal "*" (from ${*}) stays a different token.
Token = str | Variable
STAR = "\x00*"
QUESTION = "\x00?"


def tokenize(text: str, *, variables: bool, wildcards: bool) -> tuple[Token, ...]:
    """Split `text` into literals, wildcards and (2012-10-17 only) policy variables."""
    splitter = _WILDCARD_TOKENS if variables else _PLAIN_WILDCARDS
    tokens: list[Token] = []
    # re.split with one group alternates literal text (even) and the separators (odd).
    for position, piece in enumerate(splitter.split(text)):
        if position % 2 == 0:
            if piece:
                tokens.append(piece)
        elif piece in _ESCAPES:
            tokens.append(_ESCAPES[piece])
        elif piece in ("*", "?"):
            tokens.append((STAR if piece == "*" else QUESTION) if wildcards else piece)
        else:
            tokens.append(Variable.parse(piece[2:-1]))
    return tuple(tokens)


def has_variables(tokens: Sequence[Token]) -> bool:
    return any(isinstance(token, Variable) for token in tokens)


def glob_regex(
    tokens: Sequence[Token], context: RequestContext | None, *, ignore_case: bool = False
) -> re.Pattern[str] | None:
    """IAM globbing over tokens: `*` any run, `?` one character, across ':' and '/' alike.

    A variable's value is literal text. Without a context a variable matches anything (the
    caller knows the answer is then only "maybe"); with one, a variable that has no value
    makes the whole glob match nothing, as IAM does.
    """
    parts: list[str] = []
    for token in tokens:
        if isinstance(token, Variable):
            if context is None:
                parts.append(".*")
                continue
            value = token.resolve(context)
            if value is None:
                return None
            parts.append(re.escape(value))
        elif token == STAR:
            parts.append(".*")
        elif token == QUESTION:
            parts.append(".")
        else:
            parts.append(re.escape(token))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def render(tokens: Sequence[Token], context: RequestContext) -> str | None:
    """The text with variables substituted; None when one of them has no value."""
    parts: list[str] = []
    for token in tokens:
        if isinstance(token, Variable):
            value = token.resolve(context)
            if value is None:
                return None
            parts.append(value)
        else:
            parts.append({STAR: "*", QUESTION: "?"}.get(token, token))
    return "".join(parts)


def arn_globs(
    tokens: Sequence[Token], context: RequestContext | None
) -> list[re.Pattern[str]] | None:
    """ArnLike and ArnEquals: six globs, one per colon-separated part of the ARN, so that a
    wildcard never reaches past its part (the last part, the resource, takes the rest)."""
    segments: list[list[Token]] = [[]]
    for token in tokens:
        if isinstance(token, str) and token not in (STAR, QUESTION) and len(segments) < 6:
            first, *more = token.split(":", 6 - len(segments))
            segments[-1].append(first)
            segments.extend([piece] for piece in more)
        else:
            segments[-1].append(token)
    if len(segments) != 6:
        # Too few parts for an ARN ("*", "arn:aws:s3:::*" with parts left out): one glob
        # over the whole value, a trailing `*` reaching across colons as in a Resource.
        whole = glob_regex(tokens, context)
        return None if whole is None else [whole]
    globs: list[re.Pattern[str]] = []
    for segment in segments:
        glob = glob_regex(segment, context)
        if glob is None:
            return None
        globs.append(glob)
    return globs


# --- value types ----------------------------------------------------------------------


def _parse_number(text: str) -> Decimal:
    try:
        number = Decimal(text.strip())
    except InvalidOperation as error:
        raise ValueError("not a number") from error
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


def _parse_date(text: str) -> datetime:
    """ISO 8601 (date, or date and time; no zone means UTC) or seconds since the epoch."""
    text = text.strip()
    try:
        if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError) as error:
        raise ValueError("not an ISO 8601 date or epoch seconds") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_bool(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("not true or false")
    return lowered


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as error:
        raise ValueError("not an IP address or CIDR range") from error


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as error:
        raise ValueError("not an IP address") from error


def _parse_binary(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64") from error


@dataclass(frozen=True)
class _Kind:
    """How one family of operators reads the policy's values and the request's."""

    name: str  # for messages: "a date", "an IP address"...
    parse_policy: Callable[[str], Any] | None  # None: compared as text or glob
    parse_request: Callable[[str], Any] | None


_TEXT = _Kind("text", None, None)
_NUMBER = _Kind("a number", _parse_number, _parse_number)
_DATE = _Kind("a date", _parse_date, _parse_date)
_BOOL = _Kind("true or false", _parse_bool, _parse_bool)
_BINARY = _Kind("base64", _parse_binary, _parse_binary)
_IP = _Kind("an IP address", _parse_network, _parse_address)


@dataclass(frozen=True)
class _Operator:
    kind: _Kind
    negated: bool
    # How a policy value matches a request value: equals, equals_ignore_case, like (glob),
    # arn (a glob per ARN part), in (address in range), null, or an order in _ORDER.
    compare: str


_OPERATORS: dict[str, _Operator] = {
    "StringEquals": _Operator(_TEXT, False, "equals"),
    "StringNotEquals": _Operator(_TEXT, True, "equals"),
    "StringEqualsIgnoreCase": _Operator(_TEXT, False, "equals_ignore_case"),
    "StringNotEqualsIgnoreCase": _Operator(_TEXT, True, "equals_ignore_case"),
    "StringLike": _Operator(_TEXT, False, "like"),
    "StringNotLike": _Operator(_TEXT, True, "like"),
    "NumericEquals": _Operator(_NUMBER, False, "eq"),
    "NumericNotEquals": _Operator(_NUMBER, True, "eq"),
    "NumericLessThan": _Operator(_NUMBER, False, "lt"),
    "NumericLessThanEquals": _Operator(_NUMBER, False, "le"),
    "NumericGreaterThan": _Operator(_NUMBER, False, "gt"),
    "NumericGreaterThanEquals": _Operator(_NUMBER, False, "ge"),
    "DateEquals": _Operator(_DATE, False, "eq"),
    "DateNotEquals": _Operator(_DATE, True, "eq"),
    "DateLessThan": _Operator(_DATE, False, "lt"),
    "DateLessThanEquals": _Operator(_DATE, False, "le"),
    "DateGreaterThan": _Operator(_DATE, False, "gt"),
    "DateGreaterThanEquals": _Operator(_DATE, False, "ge"),
    "Bool": _Operator(_BOOL, False, "eq"),
    "BinaryEquals": _Operator(_BINARY, False, "eq"),
    "IpAddress": _Operator(_IP, False, "in"),
    "NotIpAddress": _Operator(_IP, True, "in"),
    "ArnEquals": _Operator(_TEXT, False, "arn"),
    "ArnLike": _Operator(_TEXT, False, "arn"),
    "ArnNotEquals": _Operator(_TEXT, True, "arn"),
    "ArnNotLike": _Operator(_TEXT, True, "arn"),
    "Null": _Operator(_BOOL, False, "null"),
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda policy, request: bool(request == policy),
    "lt": lambda policy, request: bool(request < policy),
    "le": lambda policy, request: bool(request <= policy),
    "gt": lambda policy, request: bool(request > policy),
    "ge": lambda policy, request: bool(request >= policy),
}


def _arn_segments(text: str) -> list[str] | None:
    segments = text.split(":", 5)
    return segments if len(segments) == 6 and segments[0] == "arn" else None


# --- one test of a Condition block -----------------------------------------------------


@dataclass(frozen=True)
class ConditionResult:
    """How one key's test came out for one request."""

    test: ConditionTest
    request_values: tuple[str, ...] | None  # None: the request does not have the key
    holds: bool

    def describe(self) -> str:
        values = ", ".join(repr(value) for value in self.test.values)
        wanted = f"{self.test.operator} {self.test.key} [{values}]"
        if self.request_values is None:
            seen = "the request has no such key"
        else:
            seen = "the request has " + ", ".join(repr(v) for v in self.request_values)
        return f"{wanted} {'holds' if self.holds else 'does not hold'} ({seen})"

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.test.operator,
            "key": self.test.key,
            "values": list(self.test.values),
            "request_values": (None if self.request_values is None else list(self.request_values)),
            "holds": self.holds,
        }


@dataclass(frozen=True)
class ConditionTest:
    """One key of one operator of a Condition block, e.g. StringEquals aws:username."""

    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    key: str
    values: tuple[str, ...]  # as written, JSON numbers and booleans as text
    base: str  # the operator without set prefix and IfExists, e.g. "StringLike"
    set_operator: SetOperator | None
    if_exists: bool
    tokens: tuple[tuple[Token, ...], ...]  # one per value
    where: str  # the statement, for errors about the request's values

    @property
    def _spec(self) -> _Operator:
        return _OPERATORS[self.base]

    def evaluate(self, context: RequestContext) -> ConditionResult:
        request = context.values(self.key)
        return ConditionResult(self, request, self._holds(request, context))

    def _holds(self, request: tuple[str, ...] | None, context: RequestContext) -> bool:
        spec = self._spec
        if spec.compare == "null":
            # Null true: the key must be absent; false: it must be present.
            absent = request is None or not request
            return absent == (_parse_bool(self.values[0]) == "true")
        if request is None or not request:
            if self.if_exists or self.set_operator == "ForAllValues":
                return True
            if self.set_operator == "ForAnyValue":
                return False
            # A negated operator holds when there is nothing for it to match.
            return spec.negated
        policy_values = self._policy_values(context)

        def matches(value: str) -> bool:
            parsed = self._request_value(value, context)
            return any(self._match(policy, parsed) for policy in policy_values)

        def passes(value: str) -> bool:
            return matches(value) != spec.negated

        if self.set_operator == "ForAllValues":
            return all(passes(value) for value in request)
        if self.set_operator == "ForAnyValue":
            return any(passes(value) for value in request)
        # A single-valued operator on several values: matched when any one matches.
        return any(matches(value) for value in request) != spec.negated

    def _policy_values(self, context: RequestContext) -> list[Any]:
        spec = self._spec
        values: list[Any] = []
        for tokens in self.tokens:
            if spec.compare in ("like", "arn"):
                glob = glob_regex(tokens, context) if spec.compare == "like" else None
                globs = arn_globs(tokens, context) if spec.compare == "arn" else glob
                # A variable without a value matches nothing.
                if globs is not None:
                    values.append(globs)
                continue
            text = render(tokens, context)
            # A variable without a value is null: it equals nothing.
            if text is None:
                continue
            if spec.kind.parse_policy is None:
                values.append(text)
                continue
            try:
                values.append(spec.kind.parse_policy(text))
            except ValueError:
                continue
        return values

    def _request_value(self, value: str, context: RequestContext) -> Any:
        parse = self._spec.kind.parse_request
        if parse is None:
            return value
        try:
            return parse(value)
        except ValueError as error:
            raise UsageError(
                f"--context {context.name(self.key)}={value!r} is {error}, but {self.where} "
                f"compares it with {self.operator}, which needs {self._spec.kind.name}",
                f"pass {context.name(self.key)} as {self._spec.kind.name}",
            ) from error

    def _match(self, policy: Any, request: Any) -> bool:
        compare = self._spec.compare
        if compare == "equals":
            return bool(policy == request)
        if compare == "equals_ignore_case":
            return bool(policy.casefold() == request.casefold())
        if compare == "like":
            return policy.fullmatch(request) is not None
        if compare == "arn":
            if len(policy) == 1:
                return policy[0].fullmatch(request) is not None
            segments = _arn_segments(request)
            return segments is not None and all(
                glob.fullmatch(segment) is not None
                for glob, segment in zip(policy, segments, strict=True)
            )
        if compare == "in":
            return bool(request.version == policy.version and request in policy)
        return _ORDER[compare](policy, request)


_VALUE_TYPES = (str, bool, int, float)


def _value_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_condition(raw: object, where: str, *, variables: bool) -> tuple[ConditionTest, ...]:
    """Check a statement's Condition block; ConfigError names the statement and operator."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: Condition must be a JSON object", "fix the Condition")
    tests: list[ConditionTest] = []
    for operator, block in raw.items():
        base, set_operator, if_exists = _split_operator(operator, where)
        if not isinstance(block, dict) or not block:
            raise ConfigError(
                f"{where}: Condition {operator} must map condition keys to values",
                f'write "{operator}": {{"aws:username": "..."}}',
            )
        for key, value in block.items():
            texts = _condition_values(value, f"{where}: Condition {operator} {key}")
            tokens = tuple(
                tokenize(text, variables=variables, wildcards=True)
                if _OPERATORS[base].compare in ("like", "arn")
                else tokenize(text, variables=variables, wildcards=False)
                for text in texts
            )
            test = ConditionTest(operator, key, texts, base, set_operator, if_exists, tokens, where)
            _check_values(test, where)
            tests.append(test)
    return tuple(tests)


def _split_operator(operator: str, where: str) -> tuple[str, SetOperator | None, bool]:
    set_operator: SetOperator | None = None
    base = operator
    prefixes: tuple[SetOperator, ...] = ("ForAnyValue", "ForAllValues")
    for prefix in prefixes:
        if base.startswith(prefix + ":"):
            set_operator = prefix
            base = base[len(prefix) + 1 :]
            break
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    if base not in _OPERATORS or (base == "Null" and (if_exists or set_operator)):
        raise ConfigError(
            f"{where}: unknown condition operator {operator!r}",
            "use an IAM operator such as StringEquals, StringLike, ArnLike, NumericLessThan, "
            "DateGreaterThan, Bool, IpAddress or Null (with IfExists or ForAnyValue:/"
            "ForAllValues: where needed)",
        )
    return base, set_operator, if_exists


def _condition_values(value: object, where: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(item, _VALUE_TYPES) for item in values):
        raise ConfigError(
            f"{where}: a condition value must be a string, number or boolean, or a "
            "non-empty list of them",
            'write "aws:username": "alice" or "aws:username": ["alice", "bob"]',
        )
    return tuple(_value_text(item) for item in values)


def _check_values(test: ConditionTest, where: str) -> None:
    spec = _OPERATORS[test.base]
    parse = spec.kind.parse_policy
    if spec.compare == "null" and len(test.values) != 1:
        raise ConfigError(
            f"{where}: Condition Null {test.key} takes one value, true or false",
            'write "Null": {"KEY": "true"} (absent) or "false" (present)',
        )
    if parse is None:
        return
    for text, tokens in zip(test.values, test.tokens, strict=True):
        if has_variables(tokens):
            continue  # its value is known only with the request
        try:
            parse(text)
        except ValueError as error:
            raise ConfigError(
                f"{where}: Condition {test.operator} {test.key}: {text!r} is {error}",
                f"write {spec.kind.name} there",
            ) from error
