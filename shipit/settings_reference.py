"""docs/settings.md, written from the settings' own definitions: `python -m
shipit.settings_reference > docs/settings.md` (`make docs`). tests/test_docs.py fails when the
file in the repository is not what this prints."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

from shipit.config import CONFIG_FILE, SPECS, SettingSpec, setting_flag
from shipit.registries.entries import RegistryEntry

REGENERATE = "python -m shipit.settings_reference > docs/settings.md"

_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    tuple: "list of strings",
}


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(spec: SettingSpec) -> str:
    if spec.default_help:
        return spec.default_help
    value: Any = spec.default
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, float) and value.is_integer():
        return _code(str(int(value)))
    if isinstance(value, tuple):
        return ", ".join(_code(item) for item in value) if value else "(none)"
    return _code(str(value)) if value != "" else "(none)"


def commands_taking(flag: str) -> list[str]:
    """The commands (`iam check` for a subcommand) that accept `flag`, as the CLI defines them."""
    import typer.main

    from shipit.cli import app

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                yield from walk(sub, (*path, name))
        elif any(flag in param.opts for param in command.params):
            yield path

    return sorted(" ".join(path) for path in walk(typer.main.get_command(app), ()))


def _flag(spec: SettingSpec) -> str:
    flag = setting_flag(spec.name)
    commands = commands_taking(flag)
    return f"{_code(flag)} ({', '.join(commands)})" if commands else ""


def _registry_field(item: dataclasses.Field[Any]) -> str:
    required = item.default is dataclasses.MISSING
    default = "required" if required else _code(str(item.default)) if item.default else "(none)"
    return f"| `{item.name}` | {default} | {_cell(item.metadata['doc'])} |"


def reference() -> str:
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated from shipit/config.py by `" + REGENERATE + "` (`make docs`);",
        "     edit the definitions there, not this file. -->",
        "",
        f"Each setting comes from `{CONFIG_FILE}` (or `[tool.shipit]` in `pyproject.toml`), then",
        "its environment variables (the first one set wins), then its flag; later ones win.",
        "`shipit config` shows each value and where it came from. How the settings work",
        "together: [configuration.md](configuration.md).",
        "",
        "| setting | environment | flag (commands) | type | default | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for spec in SPECS:
        env = ", ".join(_code(name) for name in spec.env_names)
        lines.append(
            f"| `{spec.name}` | {env} | {_flag(spec)} | {_TYPES[spec.kind]} "
            f"| {_cell(_default(spec))} | {_cell(spec.help)} |"
        )
    lines += [
        "",
        f"List settings ({', '.join(_code(spec.name) for spec in SPECS if spec.kind is tuple)}) "
        "take a comma-separated list in their environment variable.",
        "",
        "## `[[registries]]` entries",
        "",
        f"Each `[[registries]]` table of `{CONFIG_FILE}` adds one OCI registry beside `ecr` and",
        "`dockerhub`. Every field is a string.",
        "",
        "| field | default | what it is |",
        "|---|---|---|",
        *(_registry_field(item) for item in dataclasses.fields(RegistryEntry)),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
