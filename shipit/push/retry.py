"""Transient faults retried with bounded exponential backoff and jitter; an expired token
renewed once; a refusal that a stale ECR token cache explains looked up again once; other
refusals fail at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from shipit.errors import (
    AuthError,
    PushStreamError,
    RegistryUnreachableError,
    RepositoryMissingError,
    ShipitError,
    TagConflictError,
    TokenExpired,
)
from shipit.iam.refusal import refused_action, refused_request
from shipit.progress import Progress
from shipit.push.targets import Target
from shipit.push_stream import EXPIRED_TOKEN_WORDS
from shipit.registries.distribution import RegistryAuthError, is_transient

Outcome = TypeVar("Outcome")
# Bounds of the backoff between attempts; the total wait stays under ~15 s at 4 attempts.
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, PushStreamError):
        return error.transient
    if isinstance(error, RegistryUnreachableError):
        return True
    return is_transient(error)


def auth_refusal(error: RegistryAuthError, target: Target) -> AuthError:
    """A 401/403 of shipit's own registry requests, as the AuthError the report names (the
    client's subclass is an implementation detail), worded as the engine's refusals are."""
    words = error.registry_message
    if any(expired in words.lower() for expired in EXPIRED_TOKEN_WORDS):
        return TokenExpired(f"{target.reference}: the registry token has expired ({words})")
    # ECR answers a missing permission with AWS's own sentence naming the action (but a
    # HEAD's answer has no body: then the request names it).
    refusal = refused_action(words)
    if refusal is None and target.name == "ecr" and error.status == 403:
        refusal = refused_request(error.method, error.url)
    if refusal is None:
        return AuthError(error.message, error.hint)
    return AuthError(f"{error.message}: {refusal.describe()}", refusal.hint())


def stale_cache_explains(error: ShipitError) -> bool:
    """A refusal that a cached token or cached repository facts could cause: the token is
    refused, the repository is gone, or its tag mutability changed."""
    return isinstance(error, AuthError | RepositoryMissingError | TagConflictError)


def with_retries(
    target: Target, attempts: int, progress: Progress, step: Callable[[], Outcome]
) -> tuple[Outcome, int]:
    """`step()`'s result and the attempt it took."""
    renewed = False

    def run_step() -> Outcome:
        try:
            return step()
        except RegistryAuthError as error:
            raise auth_refusal(error, target) from error

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=RETRY_INITIAL_SECONDS, max=RETRY_MAX_SECONDS),
        retry=retry_if_exception(is_retryable),
        reraise=True,
        before_sleep=lambda state: progress(
            f"{target.name}: attempt {state.attempt_number} failed "
            f"({state.outcome.exception() if state.outcome else ''}); retrying"
        ),
    )
    for attempt in retrying:
        with attempt:
            try:
                result = run_step()
            except ShipitError as error:
                if target.resolve_fresh is not None and stale_cache_explains(error):
                    progress(
                        f"{target.name}: {error.one_line()}; looking up the cached ECR token "
                        "and repository again"
                    )
                    target.forget_cached()
                    result = run_step()
                    return result, attempt.retry_state.attempt_number
                if not isinstance(error, TokenExpired) or renewed or target.refresh_auth is None:
                    raise
                renewed = True
                progress(f"{target.name}: token expired; fetching a fresh one")
                target.renew_auth()
                result = run_step()
            return result, attempt.retry_state.attempt_number
    raise AssertionError("unreachable: tenacity reraises the last error")
