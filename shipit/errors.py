"""The one error tree of shipit: every failure a user can meet, with its exit code and a hint.

The CLI catches ShipitError once and turns it into a one-line message and `exit_code`;
nothing else in shipit decides exit codes.
"""

from __future__ import annotations

import contextlib
import copy
import copyreg
import errno
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any, Self


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    TEMPLATE = 4
    ENGINE = 5
    BUILD = 6
    RUN = 7
    SMOKE = 8
    PUSH = 9
    AUTH = 10
    AWS = 11
    PRECONDITION = 12
    POLICY_DENIED = 13
    REGISTRY_UNREACHABLE = 14
    DOCTOR = 15
    BUSY = 16
    NOT_WRITABLE = 17
    SIGNING = 18
    UNVERIFIED = 19
    INTERRUPTED = 130
    # The reader of stdout went away (`shipit config --json | head -1`): 128 + SIGPIPE, as a
    # shell reports a tool killed by that signal.
    BROKEN_PIPE = 141
    # SIGTERM, as a CI runner sends when a job is cancelled: 128 + its number, as a shell
    # reports a process killed by it.
    TERMINATED = 143


class ShipitError(Exception):
    """Base class. `message` says what is wrong, `hint` says what to do."""

    exit_code: ExitCode = ExitCode.INTERNAL
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        # Extra lines (a build log tail, container logs) shown under the one-line message.
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy (or a pickle) is made from the error's attributes: the subclasses' __init__
        # take keyword arguments that `args` does not hold.
        return (copyreg.__newobj__, (type(self), *self.args), self.__dict__)  # type: ignore[attr-defined]

    def reworded(self, message: str) -> Self:
        """This error saying `message` instead (a summary of several): the same class, so the
        same exit code, with the same hint, details and attributes."""
        twin = copy.copy(self)
        twin.message = message
        twin.args = (message,)
        return twin

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f"; {self.hint}"
        return " ".join(text.split())

    def to_json(self) -> dict[str, object]:
        """The error as every JSON document of shipit carries it."""
        return {
            "class": type(self).__name__,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "hint": self.hint,
        }


class UsageError(ShipitError):
    exit_code = ExitCode.USAGE


class ConfigError(ShipitError):
    exit_code = ExitCode.CONFIG


class PlatformError(ConfigError):
    """A malformed platform, or one the base image does not offer."""


class TemplateError(ShipitError):
    exit_code = ExitCode.TEMPLATE
    default_hint = "fix the template or site/site.toml and run again"


class SiteTooLargeError(TemplateError):
    """The site is over max_site_size: refused before anything is read or built."""


class EngineError(ShipitError):
    exit_code = ExitCode.ENGINE


class EngineRefused(EngineError):
    """The engine answered, and refused the call: `status` is its HTTP status, `explanation`
    the engine's own words."""

    def __init__(
        self, message: str, hint: str | None = None, *, status: int, explanation: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.explanation = explanation


class BuildError(ShipitError):
    exit_code = ExitCode.BUILD


class RunError(ShipitError):
    exit_code = ExitCode.RUN


class PortBusyError(RunError):
    pass


class ContainerExitedError(RunError):
    pass


# What the kernel says when it has no emulator for another platform's binaries.
NO_EMULATOR_WORDS = "exec format error"


def no_emulator(architecture: str) -> RunError:
    """An image of another platform than the engine's, which its machine cannot run."""
    architecture = architecture or "its platform"
    return RunError(
        f"the engine's machine cannot run {architecture} programs: no emulator is registered "
        "in binfmt_misc",
        "on that machine: apt-get install qemu-user-static binfmt-support, or docker run "
        f"--privileged --rm tonistiigi/binfmt --install {architecture}; "
        "or pass --skip-smoke to push without running the image",
    )


class SmokeError(ShipitError):
    exit_code = ExitCode.SMOKE

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        details: str = "",
        problems: tuple[dict[str, object], ...] = (),
    ) -> None:
        super().__init__(message, hint, details=details)
        # The crawl's broken references ({"page", "reference", "answer"}), for --json.
        self.problems = problems

    def to_json(self) -> dict[str, object]:
        data = super().to_json()
        if self.problems:
            data["problems"] = list(self.problems)
        return data


class PushError(ShipitError):
    exit_code = ExitCode.PUSH


class PushStreamError(PushError):
    """A refusal that came as a line in the engine's push stream; `transient` says whether
    another attempt may succeed."""

    def __init__(self, message: str, hint: str | None = None, *, transient: bool) -> None:
        super().__init__(message, hint)
        self.transient = transient


class RepositoryMissingError(PushError):
    """The registry does not know the repository the push names."""


class TagConflictError(PushError):
    default_hint = "build from a new commit, or use a mutable repository for this tag"


class RegistryUnreachableError(PushError):
    exit_code = ExitCode.REGISTRY_UNREACHABLE


def stalled_push(reference: str, seconds: float) -> RegistryUnreachableError:
    """A push that made no progress for `seconds` (engine_timeout): worth another attempt."""
    return RegistryUnreachableError(
        f"the push of {reference} made no progress for {seconds:g} s",
        "check that the registry answers and accepts uploads, then push again",
    )


class AuthError(ShipitError):
    exit_code = ExitCode.AUTH


class TokenExpired(AuthError):
    """The registry's token ran out during the push: worth one renewal, not a retry."""


class AwsError(ShipitError):
    exit_code = ExitCode.AWS


class RootUserError(AwsError):
    default_hint = (
        "push with an IAM user or role that has only the policy from `shipit iam policy` "
        "(pass --allow-root to push anyway)"
    )


class PreconditionError(ShipitError):
    exit_code = ExitCode.PRECONDITION


class PolicyDeniedError(ShipitError):
    exit_code = ExitCode.POLICY_DENIED


class DoctorError(ShipitError):
    exit_code = ExitCode.DOCTOR


class ProjectBusyError(ShipitError):
    """Another shipit command held the project (its container, .shipit/) past lock_timeout."""

    exit_code = ExitCode.BUSY


class NotWritableError(ShipitError):
    """A folder shipit must write to is read-only: a read-only checkout, mount or permissions."""

    exit_code = ExitCode.NOT_WRITABLE

    # What a read-only file system or missing permission answers; a full disk is another error.
    ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

    @classmethod
    @contextlib.contextmanager
    def raised_for(cls, what: str, folder: Path, hint: str) -> Iterator[None]:
        """The block's write refused by a read-only folder as this error; other OSErrors
        (a full disk) as they are."""
        try:
            yield
        except OSError as error:
            if error.errno not in cls.ERRNOS:
                raise
            raise cls(f"cannot write {what} {folder}: {error.strerror or error}", hint) from error


class SigningError(ShipitError):
    """The signing key cannot be read or used (a wrong passphrase, an RSA key, a KMS key that
    does not sign), or a registry refused the signature: raised before any tag moves."""

    exit_code = ExitCode.SIGNING


class UnverifiedError(ShipitError):
    """`shipit verify`: the image has no signature or attestation that the key verifies."""

    exit_code = ExitCode.UNVERIFIED


class Interrupted(ShipitError):
    """Ctrl-C (SIGINT); the message says what became of the command's work."""

    exit_code = ExitCode.INTERRUPTED
    default_hint = ""


class Terminated(Interrupted):
    """SIGTERM, handled as Ctrl-C is."""

    exit_code = ExitCode.TERMINATED


class OutputClosed(ShipitError):
    """stdout's reader went away; there is nobody to tell, so the CLI prints nothing."""

    exit_code = ExitCode.BROKEN_PIPE
    default_hint = ""
