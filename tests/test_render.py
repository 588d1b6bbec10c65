"""Rendering: deterministic contexts, escaping, and template errors that name file and line."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from shipit.errors import TemplateError
from shipit.render import render_site
from tests.conftest import copy_example

BASE = "nginx:1.27.3-bookworm"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "p")


def test_same_input_gives_same_bytes_and_digest(example: Path, tmp_path: Path) -> None:
    twin = copy_example(tmp_path / "twin")
    first, second = render_site(example, BASE), render_site(twin, BASE)
    assert first.files == second.files
    assert first.context_digest == second.context_digest
    assert first.to_tar() == second.to_tar()
    assert first.build_id == second.build_id


def test_changed_data_changes_build_id_digest_and_page(example: Path) -> None:
    before = render_site(example, BASE)
    data = example / "site" / "site.toml"
    data.write_text(data.read_text().replace("Shipped, smoke-tested", "Changed heading"))
    after = render_site(example, BASE)
    assert after.build_id != before.build_id
    assert after.context_digest != before.context_digest
    assert b"Changed heading" in after.files["shipit/site/index.html"]
    assert after.build_id.encode() in after.files["shipit/site/index.html"]


def test_base_image_is_part_of_the_build(example: Path) -> None:
    assert render_site(example, BASE).build_id != render_site(example, "other:1").build_id
    assert b"FROM other:1\n" in render_site(example, "other:1").files["Dockerfile"]


def test_pages_static_and_infrastructure_are_in_the_context(example: Path) -> None:
    site = render_site(example, BASE)
    assert site.pages == ("404.html", "about.html", "index.html")
    static = example / "site" / "static" / "logo.svg"
    assert site.files["shipit/site/static/logo.svg"] == static.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(site.to_tar())) as tar:
        names = tar.getnames()
    assert sorted(names) == sorted(site.files)
    assert "Dockerfile" in names and "shipit/nginx.conf" in names


def test_html_is_escaped_even_for_html_j2_names(example: Path) -> None:
    data = example / "site" / "site.toml"
    data.write_text(
        data.read_text().replace(
            'heading = "Shipped, smoke-tested, verified"',
            "heading = \"<script>alert('x')</script>\"",
        )
    )
    page = render_site(example, BASE).files["shipit/site/index.html"].decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page


def test_dockerfile_and_nginx_conf_are_not_html_escaped(example: Path) -> None:
    site = render_site(example, BASE)
    assert b"&#39;" not in site.files["shipit/nginx.conf"]
    assert b"default-src 'self'" in site.files["shipit/nginx.conf"]
    assert b"&#34;" not in site.files["Dockerfile"]


def test_undefined_variable_names_template_and_line(example: Path) -> None:
    template = example / "templates" / "about.html.j2"
    lines = template.read_text().splitlines()
    lines.insert(4, "    <p>{{ site.no_such_key }}</p>")
    template.write_text("\n".join(lines) + "\n")
    with pytest.raises(TemplateError) as caught:
        render_site(example, BASE)
    assert "templates/about.html.j2:5" in caught.value.message
    assert "no_such_key" in caught.value.message
    assert "\n" not in caught.value.one_line()


def test_syntax_error_names_template_and_line(example: Path) -> None:
    template = example / "templates" / "index.html.j2"
    lines = template.read_text().splitlines()
    lines[2] = "    <h1>{{ site.heading }</h1>"
    template.write_text("\n".join(lines) + "\n")
    with pytest.raises(TemplateError) as caught:
        render_site(example, BASE)
    assert caught.value.message.startswith("templates/index.html.j2:3: TemplateSyntaxError")


def test_error_in_layout_names_the_layout(example: Path) -> None:
    layout = example / "templates" / "_base.html.j2"
    layout.write_text(layout.read_text().replace("{{ site.title }}</a>", "{{ site.missing }}</a>"))
    with pytest.raises(TemplateError) as caught:
        render_site(example, BASE)
    assert "templates/_base.html.j2:" in caught.value.message


def test_missing_site_folder_is_a_clear_error(example: Path) -> None:
    (example / "site" / "site.toml").unlink()
    with pytest.raises(TemplateError, match=r"no site\.toml"):
        render_site(example, BASE)
    with pytest.raises(TemplateError, match="no site directory"):
        render_site(example / "nowhere", BASE)


def test_malformed_site_data_names_the_line(example: Path) -> None:
    data = example / "site" / "site.toml"
    data.write_text('title = "x"\nheading = \n')
    with pytest.raises(TemplateError, match=r"site\.toml is not valid TOML: .*line 2"):
        render_site(example, BASE)


def test_very_large_site_data_is_refused(example: Path) -> None:
    data = example / "site" / "site.toml"
    data.write_text(data.read_text() + '\nblob = "' + "x" * (5 * 1024 * 1024) + '"\n')
    with pytest.raises(TemplateError, match="more than the"):
        render_site(example, BASE)


def test_labels_become_one_instruction_outside_the_digest(example: Path) -> None:
    site = render_site(example, BASE)
    labels = {"b.label": 'say "hi" to $HOME', "a.label": "back\\slash"}
    with tarfile.open(fileobj=io.BytesIO(site.to_tar(labels))) as tar:
        member = tar.extractfile("Dockerfile")
        assert member is not None
        dockerfile = member.read().decode()
    assert dockerfile.startswith(site.files["Dockerfile"].decode())
    assert dockerfile.endswith(
        'LABEL "a.label"="back\\\\slash" \\\n    "b.label"="say \\"hi\\" to \\$HOME"\n'
    )
    assert dockerfile.count("LABEL ") == 1


def test_a_linked_folder_inside_the_project_is_served_like_a_copy(example: Path) -> None:
    shared = example / "assets"
    (shared / "img").mkdir(parents=True)
    (shared / "img" / "dot.svg").write_text("<svg/>")
    (example / "site" / "static" / "shared").symlink_to(shared)
    files = render_site(example, BASE).files
    assert files["shipit/site/static/shared/img/dot.svg"] == b"<svg/>"


def test_a_folder_link_that_loops_is_refused(example: Path) -> None:
    static = example / "site" / "static"
    (static / "deep").mkdir()
    (static / "deep" / "again").symlink_to(static)
    with pytest.raises(TemplateError, match=r"site/static/deep/again links to a folder that"):
        render_site(example, BASE)
