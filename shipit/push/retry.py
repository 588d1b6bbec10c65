"""Transient faults retried with bounded exponential backoff and jitter, or after the wait a
registry asks for (Retry-After, up to a cap); an expired token renewed once; a refusal that a
stale ECR token cache explains looked up again once; other refusals fail at once.

A renewal or a second look-up gives a new Target (registries/registry.py); the step is
given the target to use each time, and the caller gets back the one the last attempt used."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shipit.errors import (
    AuthError,
    PushError,
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
from shipit.registries.errors import RegistryAuthError, RegistryResponseError, is_transient

Outcome = TypeVar("Outcome")
# Bounds of the backoff between attempts; the total wait stays under ~15 s at 4 attempts.
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
# The longest Retry-After waited for between attempts. A registry asking for more (Docker
# Hub's pull limit asks for hours) will not serve this push soon: it fails at once, saying
# when to try again, instead of holding a CI job.
RETRY_AFTER_CAP_SECONDS = 60.0


def asked_wait(error: BaseException | None) -> float | None:
    """Seconds a registry's answer asked to wait before the next request (Retry-After)."""
    if isinstance(error, RegistryResponseError) and error.transient:
        return error.retry_after
    return None


class WaitForRegistry:
    """tenacity's wait: the backoff, or the registry's Retry-After when that is longer."""

    def __init__(self) -> None:
        self.backoff = wait_exponential_jitter(
            multiplier=RETRY_INITIAL_SECONDS, max=RETRY_MAX_SECONDS
        )

    def __call__(self, state: RetryCallState) -> float:
        backoff = self.backoff(state)
        asked = asked_wait(state.outcome.exception() if state.outcome else None)
        return backoff if asked is None else max(backoff, min(asked, RETRY_AFTER_CAP_SECONDS))


def whole_seconds(value: float) -> str:
    return f"{math.ceil(value):d} s"


def too_long_to_wait(error: RegistryResponseError, target: Target) -> PushError | None:
    """The error for a Retry-After beyond the cap (None when shipit waits for it): one line
    saying when the registry will answer again."""
    asked = asked_wait(error)
    if asked is None or asked <= RETRY_AFTER_CAP_SECONDS:
        return None
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=asked)
    limit = f" (its rate limit: {error.rate_limit})" if error.rate_limit else ""
    return PushError(
        f"{target.reference}: the registry answered {error.status} and asked to wait "
        f"{whole_seconds(asked)} (Retry-After){limit}, longer than shipit waits "
        f"({whole_seconds(RETRY_AFTER_CAP_SECONDS)})",
        f"push again after {until:%Y-%m-%d %H:%M:%S} UTC",
    )


def retry_line(target: Target, state: RetryCallState) -> str:
    """The progress line before a retry, naming the wait the registry asked for."""
    error = state.outcome.exception() if state.outcome else None
    asked = asked_wait(error)
    then = "retrying"
    if asked is not None:
        then = f"registry asked to wait {whole_seconds(asked)} (Retry-After); retrying"
    return f"{target.name}: attempt {state.attempt_number} failed ({error or ''}); {then}"


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
    if refusal is None and target.registry.names_iam_actions and error.status == 403:
        refusal = refused_request(error.method, error.url)
    if refusal is None:
        return AuthError(error.message, error.hint)
    return AuthError(f"{error.message}: {refusal.describe()}", refusal.hint())


def stale_cache_explains(error: ShipitError) -> bool:
    """A refusal that a cached token or cached repository facts could cause: the token is
    refused, the repository is gone, or its tag mutability changed."""
    return isinstance(error, AuthError | RepositoryMissingError | TagConflictError)


@dataclass(frozen=True)
class Tried(Generic[Outcome]):
    """How a step ended: its outcome or its error, the attempt that ended it, and the target
    that attempt used (renewed, or looked up again, on the way)."""

    target: Target
    attempts: int
    outcome: Outcome | None = None
    error: ShipitError | None = None

    def result(self) -> Outcome:
        """The outcome; the error is raised."""
        if self.error is not None:
            raise self.error
        return cast(Outcome, self.outcome)


def with_retries(
    target: Target, attempts: int, progress: Progress, step: Callable[[Target], Outcome]
) -> Tried[Outcome]:
    """`step(target)` until it succeeds, the faults are not worth another attempt, or
    `attempts` are used up."""
    current = target
    renewed = False
    number = 0

    def run_step() -> Outcome:
        try:
            return step(current)
        except RegistryAuthError as error:
            raise auth_refusal(error, current) from error
        except RegistryResponseError as error:
            too_long = too_long_to_wait(error, current)
            if too_long is not None:
                raise too_long from error
            raise

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=WaitForRegistry(),
        retry=retry_if_exception(is_retryable),
        reraise=True,
        before_sleep=lambda state: progress(retry_line(current, state)),
    )
    try:
        for attempt in retrying:
            number = attempt.retry_state.attempt_number
            with attempt:
                try:
                    result = run_step()
                except ShipitError as error:
                    if current.cached and stale_cache_explains(error):
                        progress(
                            f"{current.name}: {error.one_line()}; looking up the cached ECR "
                            "token and repository again"
                        )
                        stale, current = current, current.registry.looked_up_again(current)
                        stale.close()
                        return Tried(current, number, run_step())
                    if (
                        not isinstance(error, TokenExpired)
                        or renewed
                        or not current.registry.renewable
                    ):
                        raise
                    renewed = True
                    progress(f"{current.name}: token expired; fetching a fresh one")
                    current = current.registry.renewed(current)
                    result = run_step()
                return Tried(current, number, result)
    except ShipitError as error:
        return Tried(current, number, error=error)
    raise AssertionError("unreachable: tenacity reraises the last error")
