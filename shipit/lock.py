"""Locks that a dead process cannot leave behind: an flock on a file.

The kernel releases an flock when the last descriptor of its open file goes, however the
process ends (a kill -9 included), so a lock that can be taken belongs to nobody, and no pid
file can be stale or name a reused pid.

`project_lock` is one shipit command at a time per project (`.shipit/lock`). The commands
that change what the project owns in the engine or in `.shipit/` take it: build (the image's
tags, the file index), run and stop (the one container, under one name), push (the smoke pass
it relies on) and ship (all of them). A second one waits for the first, up to lock_timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shipit.config import Settings
from shipit.errors import NotWritableError, ProjectBusyError
from shipit.progress import Progress
from shipit.state import make_state_dir

LOCK_FILE = "lock"
POLL_SECONDS = 0.1
# Where shipit cannot write (a read-only checkout, a full disk) there is no lock, as there
# is no state: the command runs as it would without one, and fails where it must write.
_CANNOT_WRITE = NotWritableError.ERRNOS | {errno.ENOSPC, errno.EDQUOT}


def try_lock(path: Path, *, create: bool = True) -> int | None:
    """A descriptor of `path` holding its lock, or None when another open file of it holds
    the lock. The lock lasts until the descriptor is closed. Without `create`, a missing
    file raises FileNotFoundError."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    descriptor = os.open(path, flags, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def new_locked_file(folder: Path, name: str) -> int:
    """A new file `name` in `folder`, holding its lock: it is locked before it has its name,
    so nobody who finds it under that name can take the lock while this process lives."""
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(temporary, folder / name)
    except BaseException:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return descriptor


# Held by this process: the commands nest (ship builds and runs), and an flock taken twice
# by one process through two open files would wait for itself.
_held: dict[Path, int] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def project_lock(settings: Settings, command: str, progress: Progress) -> Iterator[None]:
    """This project's lock for the block: waits for another shipit that holds it (saying once
    which), and fails with ProjectBusyError when it still holds it after lock_timeout."""
    path = settings.state_dir / LOCK_FILE
    with _held_guard:
        nested = path in _held
        if nested:
            _held[path] += 1
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                _held[path] -= 1
        return
    # Not a project (a typo in --project, a folder without site/): the command fails or has
    # nothing of a project to guard, and leaves no .shipit/ behind.
    is_project = settings.state_dir.is_dir() or settings.site_dir.is_dir()
    descriptor = _wait_for(path, settings.lock_timeout, progress) if is_project else None
    if descriptor is None:
        yield
        return
    with _held_guard:
        _held[path] = 1
    try:
        _write_holder(descriptor, command)
        yield
    finally:
        with _held_guard:
            del _held[path]
        # Emptied first, so nobody reads this process's pid once it no longer holds the lock.
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
        os.close(descriptor)


def _wait_for(path: Path, timeout: float, progress: Progress) -> int | None:
    """The lock's descriptor, None where shipit cannot write."""
    try:
        make_state_dir(path.parent)
        descriptor = try_lock(path)
    except OSError as error:
        if error.errno in _CANNOT_WRITE:
            return None
        raise
    if descriptor is not None:
        return descriptor
    progress(f"waiting for {_holder(path)}, which is using this project (lock {path})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        descriptor = try_lock(path)
        if descriptor is not None:
            progress("the project is free: carrying on")
            return descriptor
    raise ProjectBusyError(
        f"{_holder(path)} still holds this project's lock {path} after {timeout:g} s",
        "let it finish (or stop it), or wait longer with lock_timeout (SHIPIT_LOCK_TIMEOUT)",
    )


def _write_holder(descriptor: int, command: str) -> None:
    holder = {
        "pid": os.getpid(),
        "command": f"shipit {command}",
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # who holds it is only information
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode() + b"\n", 0)


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"process {int(holder['pid'])} ({holder['command']}, since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        # Written a moment after the lock is taken: this one came in between.
        return "another shipit process"
