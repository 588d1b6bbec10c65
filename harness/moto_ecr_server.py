"""moto's server, with ECR's GetAuthorizationToken answering as real ECR does.

moto 5 hard-codes `expiresAt` of every ECR token to 2015-01-01. Real ECR returns the moment of
issue plus 12 hours, and shipit's ECR token cache reuses a token only during the first half of
that life, so against stock moto the cache would never hit and its tests and the bench's
developer-loop scenarios would measure nothing. This launcher patches moto's ECR responses so
that `expiresAt` is now + 12 h, then runs moto's server exactly as its `moto_server` console
script does: `python -m harness.moto_ecr_server -H 127.0.0.1 -p PORT` takes the same arguments.
harness/services.py starts moto this way, so tests and bench both get it.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

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


if __name__ == "__main__":
    _patch_token_expiry()
    sys.argv[0] = "moto_server"
    sys.exit(main())
