"""Which templates are pages, and the path each page is served at: known without Jinja, so
that a build of unchanged input (which renders nothing) still tells the smoke test every
page to fetch."""

from __future__ import annotations

from collections.abc import Iterable

PAGE_SUFFIX = ".html.j2"
# Served for every unknown path, and not at a path of its own (nginx.conf makes it internal).
NOT_FOUND_PAGE = "404"
HOME_PAGE = "index"


def is_page_template(name: str) -> bool:
    """`templates/NAME.html.j2`, not a layout or partial (a name starting with `_`)."""
    return name.endswith(PAGE_SUFFIX) and not name.startswith("_") and "/" not in name


def page_paths(template_names: Iterable[str]) -> tuple[str, ...]:
    """The served path of each page template, in name order: `/` for the home page,
    `/NAME.html` for the others; the 404 page has none."""
    paths = []
    for name in sorted(template_names):
        if not is_page_template(name):
            continue
        page = name.removesuffix(PAGE_SUFFIX)
        if page == HOME_PAGE:
            paths.append("/")
        elif page != NOT_FOUND_PAGE:
            paths.append(f"/{page}.html")
    return tuple(paths)
