"""The decision table in iam_cases.json, each row run through the evaluator as
`shipit iam check` runs it: the policy read from a file, the context from --context options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipit.errors import ConfigError, ExitCode, ShipitError, UsageError
from shipit.iam.conditions import RequestContext
from shipit.iam.evaluator import evaluate
from shipit.iam.policy_document import load_policy

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "iam_cases.json").read_text(encoding="utf-8")
)["cases"]
ERRORS: dict[str, type[ShipitError]] = {"config": ConfigError, "usage": UsageError}


def policy_documents(case: dict[str, Any]) -> list[Any]:
    if "big_policy" in case:
        return [big_policy(case["big_policy"])]
    if "policies" in case:
        return list(case["policies"])
    policy = case["policy"]
    return [{"Version": "2012-10-17", "Statement": policy} if isinstance(policy, list) else policy]


def big_policy(size: int) -> dict[str, Any]:
    """An Allow of ecr:* padded with S3 resources to about `size` non-blank characters."""
    resources: list[str] = []
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
    }
    pad = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": resources}
    document["Statement"].append(pad)
    while len(json.dumps(document, separators=(",", ":"))) < size:
        resources.append(f"arn:aws:s3:::amzn-s3-demo-bucket/{len(resources):06d}/*")
    return document


def context_options(case: dict[str, Any]) -> list[str] | None:
    if "context_options" in case:
        return list(case["context_options"])
    if "context" not in case:
        return None
    options: list[str] = []
    for key, value in case["context"].items():
        for item in value if isinstance(value, list) else [value]:
            options.append(f"{key}={item}")
    return options


def run(case: dict[str, Any], folder: Path) -> tuple[Any, list[str]]:
    policies = []
    for number, document in enumerate(policy_documents(case)):
        path = folder / f"policy{number}.json"
        path.write_text(json.dumps(document, indent=case.get("indent", 2)), encoding="utf-8")
        policies.append(load_policy(path))
    options = context_options(case)
    context = None if options is None else RequestContext.from_options(options)
    warnings = [warning for policy in policies for warning in policy.warnings]
    return evaluate(policies, case["action"], case["resource"], context), warnings


def test_the_table_is_big_enough_and_names_its_sources() -> None:
    assert len(CASES) >= 150
    assert len({case["id"] for case in CASES}) == len(CASES)
    assert all(case.get("doc") for case in CASES)
    verdicts = {case.get("expect") for case in CASES} | {case.get("error") for case in CASES}
    assert verdicts >= {"allowed", "explicit_deny", "implicit_deny", "conditional", "undecided"}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case: dict[str, Any], tmp_path: Path) -> None:
    if "error" in case:
        with pytest.raises(ShipitError) as caught:
            run(case, tmp_path)
        error = caught.value
        assert isinstance(error, ERRORS[case["error"]]), error.one_line()
        assert error.exit_code in (ExitCode.CONFIG, ExitCode.USAGE)
        assert case["message"] in error.message
        assert error.hint and "\n" not in error.one_line()
        return
    decision, warnings = run(case, tmp_path)
    assert decision.decision == case["expect"], decision.reason
    assert decision.allowed == (case["expect"] == "allowed")
    if "statement" in case:
        assert decision.statement == case["statement"], decision.reason
    if "condition" in case:
        wanted = case["condition"]
        decided = [result.to_json() for result in decision.conditions]
        assert any(
            all(found.get(name) == value for name, value in wanted.items()) for found in decided
        ), (wanted, decided)
        assert json.loads(json.dumps(decision.to_json()))["conditions"] == decided
    if "warning" in case:
        assert any(case["warning"] in warning for warning in warnings), warnings
    else:
        assert warnings == []
