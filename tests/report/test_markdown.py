"""Rendering: Markdown text reads literally, HTML escapes every string."""

from __future__ import annotations

from libra_cli.report.document import Code, Document, Figure, Heading, Strong, para, table
from libra_cli.report.html import render_html
from libra_cli.report.markdown import escape_paragraph_start, escape_text, render_markdown
from tests.report import parse_table, write_png


def test_markdown_escapes_what_would_be_interpreted():
    assert escape_text("<b>x</b>&") == "&lt;b>x&lt;/b>&"  # no tag can open; a lone & is literal
    assert escape_text("&amp;") == "&amp;amp;"  # an entity would be decoded: its & is escaped
    assert escape_text("a|b*c`d~e\\f") == "a\\|b\\*c\\`d\\~e\\\\f"
    assert escape_text("faster_rcnn") == "faster_rcnn"  # intraword underscores are literal in GFM
    assert escape_text("_x_") == "\\_x\\_"
    assert escape_text("[a](b)") == "[a\\](b)"  # no link
    assert escape_text("<!-- c -->") == "&lt;!-- c -->"  # no comment either
    assert escape_text("IoU [0, 1] > 0.05, loss < 1") == "IoU [0, 1] > 0.05, loss < 1"  # nothing at risk
    assert escape_paragraph_start("# not a heading") == "\\# not a heading"
    assert escape_paragraph_start("1. not a list") == "1\\. not a list"


def test_table_cells_keep_a_pipe_inside_the_cell():
    document = Document("t", [table(["name", "AP"], [["a|b", "0.100"], [(Strong("x"), Code("y|z")), "—"]])])
    markdown = render_markdown(document)
    assert "| a\\|b | 0.100 |" in markdown
    assert "| **x**`y\\|z` | — |" in markdown
    assert parse_table(markdown, "# t") == [{"name": "a|b", "AP": "0.100"}, {"name": "**x**`y|z", "AP": "—"}]


def test_figures_are_numbered_with_their_caption():
    document = Document("t", [Figure("a b.png", "alt", "Look at this."), Figure("c.png", "alt", "And this.")])
    markdown = render_markdown(document)
    assert "![alt](a%20b.png)\n\n*Figure 1. Look at this.*" in markdown
    assert "*Figure 2. And this.*" in markdown


def test_html_escapes_everything_and_inlines_figures(tmp_path):
    write_png(tmp_path / "f.png")
    document = Document(
        'r <"x">',
        [
            Heading(2, "<script>"),
            para("a & b ", Code("<c>"), Strong("<d>")),
            table(["<h>"], [["<b>x</b>&"]], [False]),
            Figure("f.png", 'alt "q"', "<i>cap</i>"),
        ],
    )
    page = render_html(document, tmp_path)
    for raw in ("<script>", "<b>x</b>", "<i>cap</i>", "<c>", "<d>", "<h>"):
        assert raw not in page
    assert "<title>r &lt;&quot;x&quot;&gt;</title>" in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;&amp;</td>" in page
    assert 'alt="alt &quot;q&quot;"' in page
    assert '<img src="data:image/png;base64,iVBORw0KGgo' in page  # the PNG signature, base64-encoded
