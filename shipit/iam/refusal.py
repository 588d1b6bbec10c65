"""Which IAM action AWS refused, read from AWS's own words.

AWS names the action in every authorization failure, both in API errors and in the lines a
registry push streams back ("User: ARN is not authorized to perform: ecr:PutImage on
resource: ARN because no identity-based policy allows ..."). Naming it turns "access denied"
into something a user can fix. The containerd image store streams only the request ECR
refused ("unexpected status from PUT request to URL: 403 Forbidden"); the action then follows
from the request. Pure text handling: no boto3, so publish.py can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipit.iam.actions import registry_actions

_REFUSED = re.compile(r"not authorized to perform:?\s+([a-z0-9-]+:[A-Za-z0-9*]+)")
# AWS appends "with an explicit deny in an identity-based policy" (or "... in a service
# control policy") when a Deny decided, and "because no ... policy allows" otherwise.
_EXPLICIT = re.compile(r"\bexplicit deny\b", re.IGNORECASE)
# The containerd image store streams a refused request without the registry's answer.
_REFUSED_REQUEST = re.compile(r"unexpected status from ([A-Z]+) request to (\S+): 403 Forbidden")
# The classic image store, on a 403 without a body: from ECR, the answer to a HEAD, which a
# push sends only to ask whether the registry holds a layer.
_BODYLESS_REFUSAL = "error parsing HTTP 403 response body: unexpected end of JSON input"
_LAYER_CHECK = ("HEAD", "/v2/repository/blobs/layer")


@dataclass(frozen=True)
class Refusal:
    action: str
    # An explicit Deny cannot be fixed by granting more: the Deny itself has to go.
    explicit: bool
    # Named after the refused request, not in AWS's words: a Deny may be the cause too.
    inferred: bool = False

    def describe(self) -> str:
        if self.explicit:
            return f"{self.action} is explicitly denied"
        if self.inferred:
            return f"refused {self.action}"
        return f"missing {self.action}"

    def hint(self) -> str:
        if self.inferred:
            return (
                f"grant {self.action}: `shipit iam policy` prints the policy a push needs "
                "(`shipit iam check --policy FILE` names a Deny that refuses it)"
            )
        if self.explicit:
            return (
                f"remove the Deny of {self.action} (an identity policy, boundary or SCP); "
                "`shipit iam check --policy FILE` names the statement"
            )
        return f"grant {self.action}: `shipit iam policy` prints the policy a push needs"


def refused_action(message: str) -> Refusal | None:
    """The action an AWS authorization failure names, or None when it names none."""
    found = _REFUSED.search(message)
    if found is None:
        return None
    return Refusal(found.group(1), bool(_EXPLICIT.search(message)))


def refused_request(method: str, url: str) -> Refusal | None:
    """The action ECR checks for a Registry API request it refused with 403 and without its
    words (a HEAD has no body), or None for a request that is no such call."""
    actions = registry_actions(method, url)
    if not actions:
        return None
    return Refusal(" or ".join(actions), explicit=False, inferred=True)


def refused_ecr_request(message: str) -> Refusal | None:
    """The action ECR checks for the request an engine's push stream says it refused with
    403, or None when the line names no such request."""
    if _BODYLESS_REFUSAL in message:
        return refused_request(*_LAYER_CHECK)
    found = _REFUSED_REQUEST.search(message)
    if found is None:
        return None
    return refused_request(found.group(1), found.group(2))
