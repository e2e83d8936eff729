"""Render a report :class:`~libra_cli.report.document.Document` as one self-contained HTML file.

Figures are inlined as base64 ``data:`` URIs, so the file can be mailed or archived alone. Every string
is HTML-escaped (``html.escape`` with quotes), whether it came from the report itself or from a dataset
(category names), a user (run labels) or the file system (file names).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from libra_cli.report.document import Document, Figure, Renderer

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


def _image_uri(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


class HtmlRenderer(Renderer):
    """Figures are read from ``figure_dir`` (the report folder) and inlined."""

    def __init__(self, figure_dir: Path) -> None:
        self.figure_dir = figure_dir

    def text(self, text: str) -> str:
        return escape(text)

    def code(self, text: str) -> str:
        return f"<code>{escape(text)}</code>"

    def strong(self, text: str) -> str:
        return f"<strong>{escape(text)}</strong>"

    def heading(self, level: int, text: str) -> str:
        return f"<h{level}>{escape(text)}</h{level}>"

    def paragraph(self, rendered: str) -> str:
        return f"<p>{rendered}</p>"

    def caption(self, text: str) -> str:
        return f'<p class="caption">{escape(text)}</p>\n'

    def table(self, headers: tuple[str, ...], rows: list[list[str]], numeric: tuple[bool, ...]) -> str:
        parts = ["<table>", "<tr>" + "".join(f"<th>{escape(header)}</th>" for header in headers) + "</tr>"]
        for cells in rows:
            row = "".join(
                f'<td class="num">{cell}</td>' if is_number else f"<td>{cell}</td>"
                for cell, is_number in zip(cells, numeric, strict=False)
            )
            parts.append(f"<tr>{row}</tr>")
        parts.append("</table>")
        return "\n".join(parts)

    def figure(self, block: Figure, number: int) -> str:
        return (
            f'<figure><img src="{_image_uri(self.figure_dir / block.file)}" alt="{escape(block.alt)}">'
            f"<figcaption>Figure {number}. {escape(block.caption)}</figcaption></figure>"
        )

    def bullets(self, items: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def render_html(document: Document, figure_dir: Path) -> str:
    """The whole page; figures are read from ``figure_dir`` (the report folder) and inlined."""
    body = [f"<h1>{escape(document.title)}</h1>", *HtmlRenderer(figure_dir).blocks(document)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(document.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
