"""Jinja rendering of a site into a deterministic Docker build context.

Pages are every `templates/*.html.j2` whose name does not start with `_` (those are layouts
and partials). HTML is always escaped: `select_autoescape` decides by file name and would
leave `*.html.j2` unescaped. The Dockerfile and nginx.conf are rendered without HTML
escaping, by a second environment.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from shipit import __version__
from shipit.errors import TemplateError
from shipit.inputs import build_id_of, digest_files, read_tree

PAGE_SUFFIX = ".html.j2"
DOCKERFILE_TEMPLATE = "Dockerfile.j2"
NGINX_TEMPLATE = "nginx.conf.j2"
SITE_DATA = "site.toml"
# Everything the image serves or reads lives under this folder of the context, so that one
# COPY (one layer) puts it in /srv/shipit; the Dockerfile stays outside it.
SERVED = "shipit"
LISTEN_PORT = 8080
RUN_AS = "10101:10101"
# Larger site data is almost always a mistake (a generated dump), and it would be baked
# into every page of the image.
MAX_SITE_DATA_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RenderedSite:
    """The build context as bytes, keyed by path: the same input gives the same bytes."""

    files: Mapping[str, bytes]
    pages: tuple[str, ...]
    build_id: str
    context_digest: str

    def write_to(self, out_dir: Path) -> None:
        for relative, data in self.files.items():
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def to_tar(self, labels: Mapping[str, str] | None = None) -> bytes:
        """The context as a tar; labels become one LABEL instruction appended to the
        Dockerfile (one build step instead of one per label, and the digest is unaffected)."""
        files = dict(self.files)
        if labels:
            files["Dockerfile"] = files["Dockerfile"] + label_instruction(labels).encode()
        return _deterministic_tar(files)


def label_instruction(labels: Mapping[str, str]) -> str:
    def quoted(text: str) -> str:
        # Double-quoted Dockerfile words: escape backslash, quote and $ (variable expansion).
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
        return f'"{escaped}"'

    pairs = " \\\n    ".join(
        f"{quoted(key)}={quoted(value)}" for key, value in sorted(labels.items())
    )
    return f"LABEL {pairs}\n"


def _deterministic_tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in sorted(files):
            data = files[relative]
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            info.mode = 0o644
            # nginx derives ETag and Last-Modified from mtime and size: a time taken from the
            # content keeps the tar deterministic and still changes the ETag with the content.
            info.mtime = _content_mtime(data)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _content_mtime(data: bytes) -> int:
    year_2001 = 978_307_200
    return year_2001 + int.from_bytes(hashlib.sha256(data).digest()[:4], "big") % 600_000_000


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


def page_templates(templates_dir: Path) -> list[str]:
    return sorted(
        path.name for path in templates_dir.glob(f"*{PAGE_SUFFIX}") if not path.name.startswith("_")
    )


def render_site(project_dir: Path, base_image: str, build_id: str | None = None) -> RenderedSite:
    """The build context; `build_id`, when the caller already digested the inputs for it
    (build_id_of), saves reading and hashing every file of the site a second time."""
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

    if build_id is None:
        build_id = build_id_of(project_dir, base_image)
    build = {"id": build_id, "shipit_version": __version__}
    html_env = _environment(templates_dir, html=True)
    files: dict[str, bytes] = {}
    for template_name in pages:
        page_name = template_name.removesuffix(PAGE_SUFFIX)
        context = {"site": site_data, "build": build, "page": {"name": page_name}}
        files[f"{SERVED}/site/{page_name}.html"] = _render_template(
            html_env, template_name, context, templates_dir
        )
    for relative, data in read_tree(site_dir / "static", "site/static", project_dir).items():
        files[f"{SERVED}/site/static/{relative}"] = data

    plain_env = _environment(templates_dir, html=False)
    infra_context = {
        "base_image": base_image,
        "build": build,
        "listen_port": LISTEN_PORT,
        "run_as": RUN_AS,
        "site": site_data,
    }
    for template_name, output in (
        (DOCKERFILE_TEMPLATE, "Dockerfile"),
        (NGINX_TEMPLATE, f"{SERVED}/nginx.conf"),
    ):
        files[output] = _render_template(plain_env, template_name, infra_context, templates_dir)

    ordered = {relative: files[relative] for relative in sorted(files)}
    return RenderedSite(
        files=ordered,
        pages=tuple(f"{name.removesuffix(PAGE_SUFFIX)}.html" for name in pages),
        build_id=build_id,
        context_digest=digest_files(ordered),
    )
