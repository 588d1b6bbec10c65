"""Which IAM action AWS refused, read from AWS's own words.

AWS names the action in every authorization failure, both in API errors and in the lines a
registry push streams back ("User: ARN is not authorized to perform: ecr:PutImage on
resource: ARN because no identity-based policy allows ..."). Naming it turns "access denied"
into something a user can fix. Pure text handling: no boto3, so publish.py can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REFUSED = re.compile(r"not authorized to perform:?\s+([a-z0-9-]+:[A-Za-z0-9*]+)")
# AWS appends "with an explicit deny in an identity-based policy" (or "... in a service
# control policy") when a Deny decided, and "because no ... policy allows" otherwise.
_EXPLICIT = re.compile(r"\bexplicit deny\b", re.IGNORECASE)


@dataclass(frozen=True)
class Refusal:
    action: str
    # An explicit Deny cannot be fixed by granting more: the Deny itself has to go.
    explicit: bool

    def describe(self) -> str:
        if self.explicit:
            return f"{self.action} is explicitly denied"
        return f"missing {self.action}"

    def hint(self) -> str:
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
