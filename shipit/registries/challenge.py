"""A registry's `WWW-Authenticate` challenges, the scopes a token is asked for, and a token.

Parsing is tolerant and unit-testable without a network. `RegistryClient` (distribution.py)
answers the challenges and keeps a `BearerToken` per scope.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

# A token is dropped this long before it expires, so it cannot expire in flight.
_TOKEN_EXPIRY_MARGIN = 10.0


@dataclass(frozen=True)
class Challenge:
    """One parsed `WWW-Authenticate` challenge: its scheme (lower case) and parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str:
        """A parameter (realm, service, scope, error), "" when the challenge has none."""
        return self.params.get(name, "")

    @property
    def realm(self) -> str:
        return self.param("realm")

    @property
    def scope(self) -> str:
        return self.param("scope")


# auth-param = token "=" ( token / quoted-string )  (RFC 7235); the quoted form may hold
# commas, as scope="repository:a/b:pull,push" does, so it cannot be split on commas.
_PARAM = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)'
)
_SCHEME = re.compile(r"\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in a `WWW-Authenticate` value, in order.

    Tolerant on purpose: an unparseable tail ends the list instead of raising, because a
    registry's odd header must not hide its status code from the user.
    """
    challenges: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        while pos < len(text) and text[pos] in ", ":
            pos += 1
        scheme_match = _SCHEME.match(text, pos)
        if not scheme_match:
            break
        scheme = scheme_match.group(1).lower()
        pos = scheme_match.end()
        params: dict[str, str] = {}
        while pos < len(text):
            param_match = _PARAM.match(text, pos)
            if not param_match:
                break
            name, value = param_match.group(1).lower(), param_match.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[name] = value
            pos = param_match.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def parse_challenge(header: str) -> Challenge | None:
    """The challenge shipit answers: Bearer if offered, else Basic, else the first one."""
    challenges = parse_challenges(header)
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return challenges[0] if challenges else None


def repository_scope(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


@dataclass
class BearerToken:
    """A token service's token for one scope, and when (time.monotonic) it expires."""

    value: str
    expires_at: float

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at - _TOKEN_EXPIRY_MARGIN
