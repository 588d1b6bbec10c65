"""Import this before docker: docker-py imports paramiko (about 0.25 s with its cryptography
and bcrypt) on `import docker`, only so that ssh:// engines work. shipit reaches ssh:// engines
through the OpenSSH client (docker-py's use_ssh_client), which never touches paramiko, so a
stand-in takes its place and imports the real one on first use, if ever.

(importlib's LazyLoader does not do here: a second `import paramiko` reads the module's
__spec__, which loads it.)

docker-py still imports paramiko for an ssh:// engine, so shipit's ssh extra installs it; a
shipit without it says so before docker-py is asked (engine.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

NAME = "paramiko"


class _Deferred(types.ModuleType):
    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(NAME) is self:
            del sys.modules[NAME]
        return getattr(importlib.import_module(NAME), attribute)


def installed() -> bool:
    """Whether paramiko can be imported (the stand-in counts: it imports the real one)."""
    try:
        return importlib.util.find_spec(NAME) is not None
    except (ImportError, ValueError):  # a broken or unloadable module in its place
        return False


def _defer() -> None:
    if NAME in sys.modules:
        return
    spec = importlib.util.find_spec(NAME)
    if spec is None:
        return  # not installed: fine until an ssh:// engine, where shipit says what to install
    stand_in = _Deferred(NAME)
    stand_in.__spec__ = spec
    sys.modules[NAME] = stand_in


_defer()
