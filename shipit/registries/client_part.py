"""What a part of `RegistryClient` (its blob reads, its blob uploads) takes from the client:
one declaration, so the parts spell the client's request options the client's one way."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests


class ClientPart:
    """A part of `RegistryClient`, which supplies its host name and its requests."""

    display_host: str
    if TYPE_CHECKING:
        # Supplied by RegistryClient, whose signature is the one spelling of the options.
        _repository: Callable[[str], str]
        _request: Callable[..., requests.Response | None]
