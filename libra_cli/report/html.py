"""Render a report :class:`~libra_cli.report.document.Document` as one self-contained HTML file.

Figures are inlined as base64 ``data:`` URIs, so the file can be mailed or archived alone. Every string
is HTML-escaped (``html.escape`` with quotes), whether it came from the report itself or from a dataset
(category names), a user (run labels) or the file system (file names).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from libra_cli.report.document import (
    BulletList,
    Cell,
    Code,
    Document,
    Figure,
    Heading,
    Inline,
    Paragraph,
    Strong,
    Table,
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f6f8fa; padding: 0.1rem 0.3rem; border-radius: 4px; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption, .caption { color: #59636e; font-style: italic; }
"""


def escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def render_inline(part: Inline) -> str:
    if isinstance(part, Code):
        return f"<code>{escape(part.text)}</code>"
    if isinstance(part, Strong):
        return f"<strong>{escape(part.text)}</strong>"
    return escape(part)


def render_cell(cell: Cell) -> str:
    if isinstance(cell, tuple):
        return "".join(render_inline(part) for part in cell)
    return render_inline(cell)


def _image_uri(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def render_table(block: Table) -> str:
    numeric = block.numeric or tuple(False for _ in block.headers)
    parts = []
    if block.caption:
        parts.append(f'<p class="caption">{escape(block.caption)}</p>')
    parts.append("<table>")
    parts.append("<tr>" + "".join(f"<th>{escape(header)}</th>" for header in block.headers) + "</tr>")
    for row in block.rows:
        cells = "".join(
            f'<td class="num">{render_cell(cell)}</td>' if is_number else f"<td>{render_cell(cell)}</td>"
            for cell, is_number in zip(row, numeric, strict=False)
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def render_html(document: Document, figure_dir: Path) -> str:
    """The whole page; figures are read from ``figure_dir`` (the report folder) and inlined."""
    body = [f"<h1>{escape(document.title)}</h1>"]
    figure_number = 0
    for block in document.blocks:
        if isinstance(block, Heading):
            level = max(1, min(block.level, 6))
            body.append(f"<h{level}>{escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append("<p>" + "".join(render_inline(part) for part in block.parts) + "</p>")
        elif isinstance(block, Table):
            body.append(render_table(block))
        elif isinstance(block, Figure):
            figure_number += 1
            body.append(
                f'<figure><img src="{_image_uri(figure_dir / block.file)}" alt="{escape(block.alt)}">'
                f"<figcaption>Figure {figure_number}. {escape(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, BulletList):
            items = "".join("<li>" + "".join(render_inline(part) for part in item) + "</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(document.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
