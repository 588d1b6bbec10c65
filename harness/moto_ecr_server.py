"""moto's server, with ECR's GetAuthorizationToken answering as real ECR does.

moto 5 hard-codes `expiresAt` of every ECR token to 2015-01-01. Real ECR returns the moment of
issue plus 12 hours, and shipit's ECR token cache reuses a token only during the first half of
that life, so against stock moto the cache would never hit and its tests and the bench's
developer-loop scenarios would measure nothing. This launcher patches moto's ECR responses so
that `expiresAt` is now + 12 h, and gives ECR's actions the repository they act on as their IAM
resource (moto judges every ECR action on "*" when it enforces IAM, so a policy scoped to a
repository ARN, the least privilege, would be refused where AWS allows it) and gives its
refusals ECR's JSON shape (moto answers them in the XML of query APIs, which botocore cannot
read for ECR), then runs moto's server exactly as its `moto_server` console script does:
`python -m harness.moto_ecr_server -H 127.0.0.1 -p PORT` takes the same arguments.
harness/services.py starts moto this way, so tests and bench both get it.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from moto.core.exceptions import JsonRESTError, _RESTError
from moto.core.responses import ActionResult
from moto.ecr.responses import ECRResponse
from moto.server import main

ECR_TOKEN_LIFETIME = datetime.timedelta(hours=12)


def _patch_token_expiry() -> None:
    original = ECRResponse.get_authorization_token

    def get_authorization_token(self: ECRResponse) -> Any:
        answer = original(self)
        expires = datetime.datetime.now(datetime.UTC) + ECR_TOKEN_LIFETIME
        data = answer.result if isinstance(answer, ActionResult) else None
        if not isinstance(data, dict) or not isinstance(data.get("authorizationData"), list):
            raise RuntimeError("moto's GetAuthorizationToken answer changed shape: fix the patch")
        for entry in data["authorizationData"]:
            entry["expiresAt"] = expires
        return answer

    ECRResponse.get_authorization_token = get_authorization_token  # type: ignore[method-assign]


def _patch_repository_resource() -> None:
    """Only matters once IAM is enforced (harness/ecr_iam.py enforce_iam); moto reads this
    before it runs the action."""

    def determine_resource(self: ECRResponse) -> str:
        try:
            params = json.loads(self.body or "{}")
        except ValueError:
            return "*"
        if not isinstance(params, dict):
            return "*"
        names = params.get("repositoryNames") or [params.get("repositoryName")]
        if len(names) != 1 or not isinstance(names[0], str):
            return "*"
        account = params.get("registryId") or self.current_account
        return f"arn:{self.partition}:ecr:{self.region}:{account}:repository/{names[0]}"

    ECRResponse._determine_resource = determine_resource  # type: ignore[attr-defined]

    authorize = ECRResponse._authenticate_and_authorize_normal_action

    def authorize_as_ecr(self: ECRResponse, resource: str = "*") -> None:
        try:
            authorize(self, resource)
        except _RESTError as error:
            kind, message = error.error_type, error.message
            if kind == "AccessDenied":
                # ECR's words: the action, the resource, and why.
                action = message.rsplit(" ", 1)[-1]
                kind = "AccessDeniedException"
                message = (
                    f"{message} on resource: {resource} because no identity-based policy "
                    f"allows the {action} action"
                )
            refusal = JsonRESTError(kind, message)
            refusal.code = error.code
            raise refusal from error

    ECRResponse._authenticate_and_authorize_normal_action = authorize_as_ecr  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch_token_expiry()
    _patch_repository_resource()
    sys.argv[0] = "moto_server"
    sys.exit(main())
