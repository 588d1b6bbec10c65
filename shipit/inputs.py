"""What a render reads, read and hashed without Jinja.

The build id is the digest of these inputs (the site, the templates, the base image and
shipit's version), and rendering is deterministic, so `shipit build` can find the image of
unchanged input by its build id without importing Jinja or rendering anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from shipit import __version__
from shipit.errors import TemplateError

BUILD_ID_LENGTH = 16


def digest_files(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for relative in sorted(files):
        data = files[relative]
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def read_tree(root: Path, label: str, project: Path) -> dict[str, bytes]:
    """Every file below root, relative path -> bytes, following links that stay inside the
    project (a linked folder is served like a copied one)."""
    if not root.is_dir():
        return {}
    files: dict[str, bytes] = {}
    project = project.resolve()

    def visit(folder: Path, prefix: str, ancestors: frozenset[Path]) -> None:
        for path in sorted(folder.iterdir()):
            relative = prefix + path.name
            if path.is_symlink() and not path.resolve().is_relative_to(project):
                # A link out of the project would bake a host file (a credential) into the image.
                raise TemplateError(
                    f"{label}/{relative} links outside the project",
                    "copy the file into the project instead of linking to it",
                )
            if path.is_dir():
                real = path.resolve()
                if real in ancestors:
                    raise TemplateError(
                        f"{label}/{relative} links to a folder that contains it (a loop)",
                        "remove the link or point it at a folder outside its own path",
                    )
                visit(path, relative + "/", ancestors | {real})
                continue
            if not path.is_file():
                # A FIFO or device would block or never end; only regular files are content.
                raise TemplateError(
                    f"{label}/{relative} is not a regular file (or its link is dangling)",
                    "remove it or replace it with a regular file",
                )
            try:
                files[relative] = path.read_bytes()
            except OSError as exc:
                raise TemplateError(
                    f"cannot read {label}/{relative}: {exc.strerror}",
                    "fix its permissions or remove it",
                ) from exc

    visit(root, "", frozenset({root.resolve()}))
    return files


def source_digest(project_dir: Path, base_image: str) -> str:
    """What the build id is derived from: every input of the rendered context."""
    inputs: dict[str, bytes] = {}
    for label in ("templates", "site"):
        for relative, data in read_tree(project_dir / label, label, project_dir).items():
            inputs[f"{label}/{relative}"] = data
    inputs["\0base_image"] = base_image.encode()
    inputs["\0shipit"] = __version__.encode()
    return digest_files(inputs)


def build_id_of(project_dir: Path, base_image: str) -> str:
    return source_digest(project_dir, base_image)[:BUILD_ID_LENGTH]
