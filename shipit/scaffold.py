"""`shipit init`: a new site project that `shipit run` serves at once.

The skeleton is the bundled example site itself (shipit/skeleton links to site/ and
templates/), plus a shipit.toml, a Makefile and a GitHub Actions workflow.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from shipit.errors import PreconditionError

# Stored without the dot so the skeleton's own .gitignore does not hide files in shipit's repo.
_RENAMES = {"gitignore": ".gitignore"}
_IMAGE_LINE = re.compile(r'^image = ".*"$', re.M)


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    files: list[tuple[str, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda item: item.name):
        relative = f"{prefix}{_RENAMES.get(child.name, child.name)}"
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            files.extend(_walk(child, relative + "/"))
        else:
            files.append((relative, child))
    return files


def image_name_for(folder: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    return name or "my-site"


def init_project(destination: Path, force: bool = False) -> list[str]:
    """Writes the skeleton into destination; refuses to overwrite unless force."""
    skeleton = resources.files("shipit") / "skeleton"
    files = _walk(skeleton)
    existing = [relative for relative, _ in files if (destination / relative).exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        raise PreconditionError(
            f"{destination} already has {shown}",
            "choose a new folder, or pass --force to overwrite those files",
        )
    image = image_name_for(destination)
    for relative, source in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        if relative == "shipit.toml":
            data = _IMAGE_LINE.sub(f'image = "{image}"', data.decode("utf-8"), count=1).encode()
        target.write_bytes(data)
    return [relative for relative, _ in files]
