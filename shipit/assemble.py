"""Building the image without `docker build`, when the Dockerfile allows it.

The bundled Dockerfile only sets image settings (USER, EXPOSE, STOPSIGNAL, HEALTHCHECK,
ENTRYPOINT, CMD) and copies the rendered site into one folder. For such a Dockerfile the
image is the base image plus one layer and a new config, and shipit writes both itself: the
layer is a tar of the site, the config is the base image's with those settings applied, and
the engine loads the pair (`docker load`, in the archive load_archive.py writes for its image
store) without being sent the base image's layers, which it already holds.

Docker's legacy builder, which docker-py drives, instead stores the whole context on the
engine's disk, copies it into a container, commits that container (writing the site twice
more) and commits a container for every settings step and for the labels. On a 300 MB site
that is seconds; on the example site it is most of a one-page change's build.

Anything this module does not reproduce exactly (RUN, ENV, ARG, WORKDIR, a COPY with
options, variables, a base image whose history does not match its layers, on an engine with
the containerd image store a base that was not pulled from a registry by digest) is left to
`docker build`: `recipe_of` and builder.build_image say why, and the build falls back to the
engine's builder. `builder = "docker"` forces the builder.
"""

from __future__ import annotations

import json
import posixpath
import re
import signal as signal_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.digests import sha256_digest

# The instructions that only set image settings, and what each sets.
_SETTINGS = frozenset({"USER", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "ENTRYPOINT", "CMD"})
_PORT = re.compile(r"^(\d{1,5})(?:/(tcp|udp|sctp))?$", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_HEALTHCHECK_FLAGS = {
    "interval": "Interval",
    "timeout": "Timeout",
    "start-period": "StartPeriod",
    "retries": "Retries",
}
_DEFAULT_SHELL = ("/bin/sh", "-c")
# Signal names as Docker takes them (without SIG); a name it knows and this list does not
# only means docker build does the build.
_SIGNALS = frozenset(signal.name.removeprefix("SIG") for signal in signal_module.Signals)
# What the builder adds to an image whose base sets no PATH (Docker's default for Linux).
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Folders that a COPY may create its destination in. A folder of the base image keeps its
# mode and owner under docker build; shipit's layer cannot read them from the base, and
# writes its parent folders as root-owned 0755, which is what these are in any image that
# has them, and what docker build gives a folder it creates.
_PLAIN_PARENTS = frozenset(
    {"/srv", "/usr", "/usr/share", "/usr/share/nginx", "/usr/local", "/var", "/var/www", "/opt"}
)


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    arguments: str

    @property
    def original(self) -> str:
        return f"{self.keyword} {self.arguments}"


@dataclass(frozen=True)
class Recipe:
    """What the Dockerfile does, when it is only settings and one COPY of the site."""

    base_image: str
    settings: tuple[Instruction, ...]
    copy_source: str  # a folder of the context, e.g. "shipit"
    copy_destination: str  # an absolute folder in the image, e.g. "/srv/shipit"
    copy_instruction: Instruction = field(compare=False)


@dataclass(frozen=True)
class Unsupported:
    """Why the Dockerfile needs `docker build`."""

    reason: str


def instructions_of(dockerfile: str) -> list[Instruction] | Unsupported:
    """The Dockerfile's instructions, with continuation lines joined and comments dropped,
    as Docker's parser reads them (default escape character only)."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    seen_instruction = False
    for number, raw in enumerate(dockerfile.splitlines(), start=1):
        stripped = raw.strip()
        if not pending:
            if not stripped:
                continue
            if stripped.startswith("#"):
                directive = re.match(r"^#\s*([a-zA-Z]+)\s*=", stripped)
                if not seen_instruction and directive:
                    return Unsupported(f"the parser directive on line {number}")
                continue
            start = number
        elif not stripped or stripped.startswith("#"):
            continue  # Docker drops comment and empty lines inside a continuation
        seen_instruction = True
        text = raw.rstrip()
        if text.endswith("\\"):
            pending.append(text[:-1])
            continue
        pending.append(text)
        found.append(_instruction(start, pending))
        pending = []
    if pending:  # a continuation at the end of the file ends there
        found.append(_instruction(start, pending))
    return found


def _instruction(line: int, pieces: list[str]) -> Instruction:
    keyword, *arguments = "".join(pieces).strip().split(None, 1)
    return Instruction(line, keyword.upper(), arguments[0].strip() if arguments else "")


def recipe_of(dockerfile: str, base_image: str, site_folder: str) -> Recipe | Unsupported:
    parsed = instructions_of(dockerfile)
    if isinstance(parsed, Unsupported):
        return parsed
    if not parsed or parsed[0].keyword != "FROM":
        return Unsupported("the Dockerfile does not start with FROM")
    if parsed[0].arguments.split() != [base_image]:
        return Unsupported(f"FROM {parsed[0].arguments} is not just the base image")
    settings: list[Instruction] = []
    copies: list[Instruction] = []
    for instruction in parsed[1:]:
        if instruction.keyword == "COPY":
            copies.append(instruction)
        elif instruction.keyword in _SETTINGS:
            settings.append(instruction)
        else:
            return Unsupported(f"{instruction.keyword} on line {instruction.line}")
    if len(copies) != 1:
        return Unsupported(f"{len(copies)} COPY instructions (one of the site is understood)")
    copy = copies[0]
    words = copy.arguments.split()
    if len(words) != 2 or any(_needs_shell_words(word) for word in words):
        return Unsupported(f"the COPY on line {copy.line} is not `COPY {site_folder}/ DEST/`")
    source = posixpath.normpath(words[0])
    destination = posixpath.normpath(words[1])
    if source != site_folder or not words[1].startswith("/") or destination == "/":
        return Unsupported(f"the COPY on line {copy.line} is not `COPY {site_folder}/ DEST/`")
    parents = [posixpath.dirname(destination)]
    while parents[-1] != "/":
        parents.append(posixpath.dirname(parents[-1]))
    unknown = [parent for parent in parents[:-1] if parent not in _PLAIN_PARENTS]
    if unknown:
        return Unsupported(f"a COPY into {unknown[0]}, whose mode in the base image is unknown")
    recipe = Recipe(base_image, tuple(settings), source, destination, copy)
    try:
        apply_settings({}, recipe)
    except ValueError as error:
        return Unsupported(str(error))
    return recipe


def _needs_shell_words(text: str) -> bool:
    """Quotes, escapes and variables go through Docker's word processing (and its ENV): not
    reproduced here."""
    return any(character in text for character in "\"'\\$*?[")


def _exec_form(arguments: str) -> list[str] | None:
    """The JSON (exec) form's words, or None for the shell form (what is not a JSON list of
    strings is the shell form, as in Docker's parser)."""
    if not arguments.startswith("["):
        return None
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _exec_or_shell(arguments: str, shell: Sequence[str]) -> list[str]:
    words = _exec_form(arguments)
    return [*shell, arguments] if words is None else words


def _duration(text: str, flag: str) -> int:
    """Go's time.ParseDuration for the units Docker accepts, in nanoseconds."""
    if text == "0":
        return 0
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if not match:
            raise ValueError(f"HEALTHCHECK --{flag}={text} is not a duration")
        total += float(match.group(1)) * _NANOSECONDS[match.group(2)]
        position = match.end()
    nanoseconds = int(total)
    if 0 < nanoseconds < 1_000_000:
        raise ValueError(f"HEALTHCHECK --{flag}={text} is shorter than 1ms")
    return nanoseconds


def _healthcheck(arguments: str) -> dict[str, Any]:
    words = arguments.split(None)
    health: dict[str, Any] = {}
    rest = arguments
    while words and words[0].startswith("--"):
        name, has_value, value = words[0][2:].partition("=")
        if name not in _HEALTHCHECK_FLAGS or not has_value:
            raise ValueError(f"HEALTHCHECK --{name}")
        if name == "retries":
            if not value.isdigit():
                raise ValueError(f"HEALTHCHECK --retries={value}")
            if int(value):
                health["Retries"] = int(value)
        elif nanoseconds := _duration(value, name):
            health[_HEALTHCHECK_FLAGS[name]] = nanoseconds
        rest = rest.lstrip()[len(words[0]) :].lstrip()
        words = words[1:]
    kind, _, command = rest.partition(" ")
    if kind.upper() == "NONE" and not command.strip():
        if health:
            raise ValueError("HEALTHCHECK NONE with options")
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD" or not command.strip():
        raise ValueError("a HEALTHCHECK without CMD")
    command = command.strip()
    argv = _exec_form(command)
    test = ["CMD-SHELL", command] if argv is None else ["CMD", *argv]
    return {"Test": test, **health}


def _is_signal(text: str) -> bool:
    """What Docker's signal parsing accepts: a number, or a Linux signal's name with or
    without SIG, in any case."""
    if text.isdigit():
        return 0 < int(text) < 65
    name = text.upper().removeprefix("SIG")
    return name in _SIGNALS or re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name) is not None


def base_blocker(base: Mapping[str, Any]) -> str | None:
    """Why an image on this base must come from docker build, if it must."""
    if document_os(base) != "linux":
        return f"a base image for {document_os(base)}"
    if (base.get("Config") or {}).get("OnBuild"):
        return "a base image with ONBUILD steps, which docker build runs"
    return None


def apply_settings(config: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The base image's config (as `docker image inspect` shows it) with the Dockerfile's
    settings applied as the builder applies them. Raises ValueError for what it cannot do."""
    shell = config.get("Shell") or _DEFAULT_SHELL
    cmd_set = False
    for instruction in recipe.settings:
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword in ("USER", "STOPSIGNAL", "EXPOSE") and (
            not arguments or _needs_shell_words(arguments)
        ):
            raise ValueError(f"{keyword} on line {instruction.line} uses quoting or variables")
        if keyword == "USER":
            if len(arguments.split()) != 1:
                raise ValueError(f"USER on line {instruction.line}")
            config["User"] = arguments
        elif keyword == "STOPSIGNAL":
            if not _is_signal(arguments):
                raise ValueError(f"STOPSIGNAL {arguments} on line {instruction.line}")
            config["StopSignal"] = arguments
        elif keyword == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for word in arguments.split():
                match = _PORT.match(word)
                if not match:
                    raise ValueError(f"EXPOSE {word} on line {instruction.line}")
                protocol = (match.group(2) or "tcp").lower()
                ports[f"{int(match.group(1))}/{protocol}"] = {}
            config["ExposedPorts"] = ports
        elif keyword == "HEALTHCHECK":
            config["Healthcheck"] = _healthcheck(arguments)
        elif keyword == "ENTRYPOINT":
            config["Entrypoint"] = _exec_or_shell(arguments, shell) if arguments else None
            if not cmd_set:
                config["Cmd"] = None  # as the builder: an ENTRYPOINT clears the base's CMD
        elif keyword == "CMD":
            config["Cmd"] = _exec_or_shell(arguments, shell)
            cmd_set = True
    return config


# The image


def history_of(
    base_history: Sequence[Mapping[str, Any]], base_layers: int
) -> list[dict[str, Any]] | None:
    """The base image's history, oldest first, from the engine's history listing (newest
    first). None when its entries do not account for exactly its layers."""
    import datetime as dt

    entries = []
    for item in reversed(base_history):
        entry: dict[str, Any] = {
            "created": dt.datetime.fromtimestamp(int(item.get("Created") or 0), dt.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "created_by": str(item.get("CreatedBy") or ""),
        }
        if item.get("Comment"):
            entry["comment"] = str(item["Comment"])
        if not int(item.get("Size") or 0):
            entry["empty_layer"] = True
        entries.append(entry)
    if sum(1 for entry in entries if not entry.get("empty_layer")) != base_layers:
        return None
    return entries


def image_config(
    base: Mapping[str, Any],
    history: list[dict[str, Any]],
    recipe: Recipe,
    labels: Mapping[str, str],
    layer_diff_id: str,
    created: str,
    base_id: str = "",
) -> bytes:
    """The new image's config: the base's (from `docker image inspect`) with the settings,
    the labels, the site layer and a history entry per instruction. `base_id` names the
    base as the classic image store does, by its config's digest (by default the engine's id
    of it, which is that there)."""
    config = apply_settings(_set_fields(base.get("Config") or {}), recipe)
    config["Labels"] = {**(config.get("Labels") or {}), **labels}
    config["Image"] = base_id or str(base["Id"])
    environment = list(config.get("Env") or ())
    if document_os(base) == "linux" and not any(item.startswith("PATH=") for item in environment):
        config["Env"] = [*environment, _DEFAULT_PATH]
    steps = [
        {
            "created": created,
            "created_by": f"/bin/sh -c #(nop)  {instruction.original}",
            "empty_layer": True,
        }
        for instruction in recipe.settings
    ]
    steps.append(
        {
            "created": created,
            "created_by": f"/bin/sh -c #(nop) {recipe.copy_instruction.original}",
        }
    )
    steps.append({"created": created, "created_by": "shipit: labels", "empty_layer": True})
    document: dict[str, Any] = {
        "architecture": base.get("Architecture") or "amd64",
        "os": document_os(base),
    }
    if base.get("Variant"):
        document["variant"] = base["Variant"]
    document.update(
        config=config,
        created=created,
        history=[*history, *steps],
        rootfs={
            "type": "layers",
            "diff_ids": [*((base.get("RootFS") or {}).get("Layers") or ()), layer_diff_id],
        },
    )
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _set_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the base's config without its unset fields. Engines of other versions show
    those differently (Docker 20.10's inspect lists every container field, empty or false;
    later API versions leave some out), and an unset field means the same either way: so the
    image is the same whichever engine read its base."""
    return {
        key: json.loads(json.dumps(value))
        for key, value in config.items()
        if value is not None and value != "" and value is not False
    }


def document_os(base: Mapping[str, Any]) -> str:
    return str(base.get("Os") or "linux")


def config_id(config: bytes) -> str:
    return sha256_digest(config)
