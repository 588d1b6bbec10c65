"""IAM policy documents read as IAM reads them: the grammar (Version, Statement, Effect,
Action/NotAction, Resource/NotResource, Condition), the errors IAM would refuse a policy for,
and the size IAM counts, into the Policy that the evaluator (iam/evaluator.py) judges.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from shipit.errors import ConfigError
from shipit.iam.conditions import (
    Token,
    parse_condition,
)
from shipit.iam.evaluator import PatternList, Policy, Statement, arn_parts, compile_pattern

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
    _refuse_unknown(
        document,
        _POLICY_KEYS,
        f"{source}: unknown policy element",
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


def _refuse_unknown(
    element: dict[str, object], known: frozenset[str], problem: str, hint: str
) -> None:
    """IAM refuses an element it does not know; so does shipit, naming every one."""
    if unknown := sorted(set(element) - known):
        raise ConfigError(f"{problem} {', '.join(unknown)}", hint)


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
    _refuse_unknown(
        raw,
        _STATEMENT_KEYS,
        f"{where}: unknown statement element",
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


def _wildcard_in_resource_type(tokens: Sequence[Token]) -> bool:
    parts = arn_parts(tokens)
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
) -> PatternList:
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
        compile_pattern(t, ignore_case=ignore_case, variables=variables, arn=arn) for t in texts
    )
    return PatternList(patterns, negated=key == negative)


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
