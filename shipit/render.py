"""Jinja rendering of a site into a deterministic Docker build context.

Pages are every `templates/*.html.j2` whose name does not start with `_` (those are layouts
and partials). HTML is always escaped: `select_autoescape` decides by file name and would
leave `*.html.j2` unescaped. The Dockerfile and nginx.conf are rendered without HTML
escaping, by a second environment.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import os
import tarfile
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from shipit import __version__
from shipit.assets import AssetError, Assets, precompressed, refuse_fingerprinted_names
from shipit.errors import NotWritableError, TemplateError
from shipit.inputs import (
    CHUNK_BYTES,
    SourceFile,
    Sources,
    build_id_from,
    digest_entries,
    path_order,
    scan_sources,
    stamp_of,
    torn,
)
from shipit.pages import PAGE_SUFFIX, is_page_template
from shipit.tar_headers import FIXED_MTIME, file_header

DOCKERFILE_TEMPLATE = "Dockerfile.j2"
NGINX_TEMPLATE = "nginx.conf.j2"
SITE_DATA = "site.toml"
STATIC_PREFIX = "site/static/"
# Everything the image serves or reads lives under this folder of the context, so that one
# COPY (one layer) puts it in /srv/shipit; the Dockerfile stays outside it.
SERVED = "shipit"
LISTEN_PORT = 8080
RUN_AS = "10101:10101"
# Larger site data is almost always a mistake (a generated dump), and it would be baked
# into every page of the image.
MAX_SITE_DATA_BYTES = 4 * 1024 * 1024


class ContextFiles(Mapping[str, bytes]):
    """Every file of the build context by path, in path order. Rendered files are held in
    memory; static files stay on disk and are listed from the input scan (kept in a
    temporary file), so a site of any size or number of files costs no more memory than
    its pages. A static file is read, and checked against its hash, only when asked for.
    `aliases` are static files under a second (fingerprinted) name."""

    def __init__(
        self,
        generated: Mapping[str, bytes],
        sources: Sources,
        aliases: Mapping[str, SourceFile] | None = None,
    ) -> None:
        self.generated = dict(generated)
        self.sources = sources
        self.aliases = dict(aliases or {})
        self._count: int | None = None

    def static(self) -> Iterator[tuple[str, SourceFile]]:
        for key, source in self.sources.items(STATIC_PREFIX):
            yield f"{SERVED}/{key}", source

    def entries(self) -> Iterator[tuple[str, bytes | SourceFile]]:
        """(path, bytes of a rendered file or a static file's SourceFile), in path order."""

        def in_order(
            items: Mapping[str, bytes] | Mapping[str, SourceFile],
        ) -> list[tuple[str, bytes | SourceFile]]:
            return sorted(items.items(), key=lambda item: path_order(item[0]))

        return heapq.merge(
            in_order(self.generated),
            in_order(self.aliases),
            self.static(),
            key=lambda item: path_order(item[0]),
        )

    def __getitem__(self, relative: str) -> bytes:
        if relative in self.generated:
            return self.generated[relative]
        if relative in self.aliases:
            return b"".join(self.chunks(relative, self.aliases[relative]))
        for name, source in self.static():
            if name == relative:
                return b"".join(self.chunks(name, source))
        raise KeyError(relative)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.entries())

    def __len__(self) -> int:
        if self._count is None:
            self._count = len(self.generated) + len(self.aliases) + sum(1 for _ in self.static())
        return self._count

    @staticmethod
    def chunks(relative: str, source: SourceFile) -> Iterator[bytes]:
        """A static file's bytes in pieces. A file that no longer holds what was hashed
        (written to since the listing, or while being read) raises TornFileError after its
        last piece, so a torn file never completes a context: a settled file is checked by
        its stat after the reading, any other by hashing what was read."""
        label = relative.removeprefix(f"{SERVED}/")
        digest = None if source.settled else hashlib.sha256()
        left = source.size
        try:
            with open(source.path, "rb") as stream:
                while left:
                    chunk = stream.read(min(CHUNK_BYTES, left))
                    if not chunk:
                        raise torn(label)
                    left -= len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    if left:
                        yield chunk
                if source.settled and stamp_of(os.fstat(stream.fileno())) != source.stamp:
                    raise torn(label)
                if stream.read(1):
                    raise torn(label)
        except OSError as exc:
            raise TemplateError(
                f"cannot read {label}: {exc.strerror}", "fix its permissions or remove it"
            ) from exc
        if digest is not None and digest.hexdigest() != source.sha256:
            raise torn(label)
        if source.size:
            yield chunk  # the last piece only once the file is known to be whole

    def digest(self) -> str:
        return digest_entries(
            (name, len(entry), hashlib.sha256(entry).hexdigest())
            if isinstance(entry, bytes)
            else (name, entry.size, entry.sha256)
            for name, entry in self.entries()
        )


@dataclass(frozen=True)
class RenderedSite:
    """The build context: the same input gives the same bytes."""

    files: ContextFiles
    pages: tuple[str, ...]
    build_id: str
    context_digest: str
    # Each static file a template named with static(), by URL: (as written, fingerprinted).
    assets: tuple[tuple[str, str], ...] = ()
    precompressed: int = 0  # the .gz files the render wrote

    def write_to(self, out_dir: Path) -> None:
        with NotWritableError.raised_for(
            "the render output",
            out_dir,
            "make that folder writable, or write the build context elsewhere with --out DIR",
        ):
            self._write_files(out_dir)

    def _write_files(self, out_dir: Path) -> None:
        for relative, entry in self.files.entries():
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as stream:
                if isinstance(entry, bytes):
                    stream.write(entry)
                    continue
                for chunk in self.files.chunks(relative, entry):
                    stream.write(chunk)

    def tar_chunks(self, labels: Mapping[str, str] | None = None) -> Iterator[bytes]:
        """The context as a tar, in pieces of at most about a megabyte; labels become one
        LABEL instruction appended to the Dockerfile (one build step instead of one per
        label, and the digest is unaffected)."""
        offset = 0
        for relative, entry in self.files.entries():
            if isinstance(entry, bytes):
                data = entry
                if relative == "Dockerfile" and labels:
                    data += label_instruction(labels).encode()
                size, sha256 = len(data), hashlib.sha256(data).hexdigest()
                pieces: Iterator[bytes] = iter((data,))
            else:
                size, sha256 = entry.size, entry.sha256
                pieces = self.files.chunks(relative, entry)
            header = tar_header(relative, size, sha256)
            offset += len(header)
            yield header
            for piece in pieces:
                offset += len(piece)
                yield piece
            padding = padded(size) - size
            if padding:
                offset += padding
                yield tarfile.NUL * padding
        yield tar_end(offset)

    def to_tar(self, labels: Mapping[str, str] | None = None) -> bytes:
        return b"".join(self.tar_chunks(labels))


def padded(size: int) -> int:
    """A tar member's data size rounded up to whole blocks."""
    return size + (-size % tarfile.BLOCKSIZE)


def tar_end(offset: int) -> bytes:
    """What tarfile.close() writes after the last member, at `offset`: two empty blocks,
    then zeros up to a whole record."""
    end = tarfile.NUL * (tarfile.BLOCKSIZE * 2)
    return end + tarfile.NUL * (-(offset + len(end)) % tarfile.RECORDSIZE)


def tar_header(relative: str, size: int, sha256: str) -> bytes:
    # nginx derives ETag and Last-Modified from mtime and size: a time taken from the
    # content keeps the tar deterministic and still changes the ETag with the content.
    return file_header(relative, size, _content_mtime(sha256))


def label_instruction(labels: Mapping[str, str]) -> str:
    def quoted(text: str) -> str:
        # Double-quoted Dockerfile words: escape backslash, quote and $ (variable expansion).
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
        return f'"{escaped}"'

    pairs = " \\\n    ".join(
        f"{quoted(key)}={quoted(value)}" for key, value in sorted(labels.items())
    )
    return f"LABEL {pairs}\n"


def _content_mtime(sha256: str) -> int:
    return FIXED_MTIME + int(sha256[:8], 16) % 600_000_000


def load_site_data(site_dir: Path) -> dict[str, Any]:
    data_path = site_dir / SITE_DATA
    if not site_dir.is_dir():
        raise TemplateError(
            f"no site directory at {site_dir}",
            "run shipit in a project with site/site.toml (or pass --project DIR)",
        )
    if not data_path.is_file():
        raise TemplateError(f"no {SITE_DATA} in {site_dir}", "create site/site.toml")
    raw = data_path.read_bytes()
    if len(raw) > MAX_SITE_DATA_BYTES:
        raise TemplateError(
            f"site/{SITE_DATA} is {len(raw)} bytes, more than the {MAX_SITE_DATA_BYTES} allowed",
            "keep bulk content in site/static/ and only page data in site.toml",
        )
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"site/{SITE_DATA} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise TemplateError(
            f"site/{SITE_DATA} nests arrays or tables too deeply to read",
            "flatten the data",
        ) from exc


def _template_location(exc: BaseException, templates_dir: Path) -> str:
    """Where in which template an error was raised, from Jinja's rewritten traceback."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        name = exc.filename or exc.name or "?"
        return f"{_relative(name, templates_dir)}:{exc.lineno}"
    location = ""
    traceback: types.TracebackType | None = exc.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if filename.startswith(str(templates_dir)):
            location = f"{_relative(filename, templates_dir)}:{traceback.tb_lineno}"
        traceback = traceback.tb_next
    return location or "templates"


def _relative(filename: str, templates_dir: Path) -> str:
    path = Path(filename)
    try:
        return f"templates/{path.relative_to(templates_dir).as_posix()}"
    except ValueError:
        return filename


def _render_template(
    env: jinja2.Environment, name: str, context: Mapping[str, Any], templates_dir: Path
) -> bytes:
    try:
        return env.get_template(name).render(**context).encode("utf-8")
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"template {exc.name!r} not found in {templates_dir}",
            "add it to templates/ or fix the name",
        ) from exc
    except jinja2.TemplateError as exc:
        location = _template_location(exc, templates_dir)
        message = " ".join(str(exc.message or exc).split())
        raise TemplateError(f"{location}: {type(exc).__name__}: {message}") from exc
    except AssetError as exc:
        raise TemplateError(
            f"{_template_location(exc, templates_dir)}: {exc}",
            "name a file of site/static/, relative to it: static('style.css')",
        ) from exc
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        location = _template_location(exc, templates_dir)
        raise TemplateError(f"{location}: {type(exc).__name__}: {exc}") from exc


def _environment(templates_dir: Path, *, html: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        # Pages escape everything; the Dockerfile and nginx.conf are not HTML.
        autoescape=html,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


def _served_entries(files: ContextFiles) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
    """(path, size, its bytes when asked) of every file nginx serves, for precompression."""
    for name, entry in files.entries():
        if not name.startswith(f"{SERVED}/site/"):
            continue
        if isinstance(entry, bytes):
            yield name, len(entry), functools.partial(bytes, entry)
        else:
            yield name, entry.size, functools.partial(_read_whole, name, entry)


def _read_whole(relative: str, source: SourceFile) -> bytes:
    return b"".join(ContextFiles.chunks(relative, source))


def page_templates(templates_dir: Path) -> list[str]:
    return sorted(
        path.name for path in templates_dir.glob(f"*{PAGE_SUFFIX}") if is_page_template(path.name)
    )


def render_site(
    project_dir: Path,
    base_image: str,
    build_id: str | None = None,
    *,
    sources: Sources | None = None,
    max_size: int | None = None,
    gzip_static: bool = True,
) -> RenderedSite:
    """The build context. `sources` (scan_sources) and `build_id` (build_id_from), when the
    caller already has them, save listing and hashing every file of the site again.
    `gzip_static`: whether the base image's nginx has the gzip_static module, which serves
    the `.gz` beside a file (nginx.conf.j2 compresses on the fly otherwise)."""
    templates_dir = (project_dir / "templates").resolve()
    site_dir = project_dir / "site"
    site_data = load_site_data(site_dir)
    if not templates_dir.is_dir():
        raise TemplateError(f"no templates directory at {templates_dir}", "create templates/")
    pages = page_templates(templates_dir)
    if "index.html.j2" not in pages:
        raise TemplateError(
            f"no templates/index.html.j2 in {project_dir}", "add the home page template"
        )

    if sources is None:
        sources = scan_sources(project_dir, max_size=max_size)
    if build_id is None:
        build_id = build_id_from(sources, base_image)
    refuse_fingerprinted_names(sources)
    build = {"id": build_id, "shipit_version": __version__}
    html_env = _environment(templates_dir, html=True)
    assets = Assets(sources, SERVED, _read_whole)
    html_env.globals["static"] = assets.url
    generated: dict[str, bytes] = {}
    for template_name in pages:
        page_name = template_name.removesuffix(PAGE_SUFFIX)
        context = {"site": site_data, "build": build, "page": {"name": page_name}}
        generated[f"{SERVED}/site/{page_name}.html"] = _render_template(
            html_env, template_name, context, templates_dir
        )

    plain_env = _environment(templates_dir, html=False)
    infra_context = {
        "base_image": base_image,
        "build": build,
        "gzip_static": gzip_static,
        "listen_port": LISTEN_PORT,
        "run_as": RUN_AS,
        "site": site_data,
    }
    for template_name, output in (
        (DOCKERFILE_TEMPLATE, "Dockerfile"),
        (NGINX_TEMPLATE, f"{SERVED}/nginx.conf"),
    ):
        generated[output] = _render_template(plain_env, template_name, infra_context, templates_dir)

    generated.update(assets.generated)
    files = ContextFiles(generated, sources, assets.aliases)
    packed = precompressed(_served_entries(files))
    generated.update(packed)
    files = ContextFiles(generated, sources, assets.aliases)
    return RenderedSite(
        files=files,
        pages=tuple(f"{name.removesuffix(PAGE_SUFFIX)}.html" for name in pages),
        build_id=build_id,
        context_digest=files.digest(),
        assets=assets.urls(),
        precompressed=len(packed),
    )
