"""The JSON object of a result's own fields, for the `to_json` of results whose JSON keys
are their field names (`--json` keeps those names stable for scripts)."""

from __future__ import annotations

from typing import Any


def fields_of(item: object, *names: str) -> dict[str, Any]:
    """`{name: item.name}` for each of `names`, in that order."""
    return {name: getattr(item, name) for name in names}
