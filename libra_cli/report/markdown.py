"""Render a report :class:`~libra_cli.report.document.Document` as GitHub-flavoured Markdown.

Text is escaped so that it reads literally — a category called ``<b>x</b>`` is not bold, a ``|`` in a run
label does not split a table cell — while the raw file stays readable: only the characters that would
otherwise be interpreted at their position are escaped (see :func:`escape_text`). Figures are numbered
in order.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from libra_cli.report.document import Document, Figure, Renderer

_ALWAYS = "\\`*|~"  # backslash, code, emphasis, table cells, strikethrough
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")  # only an "&" that would start an entity needs escaping
_BLOCK_MARKER = re.compile(r"^(?:[#>]|[-+](?=\s))")  # heading, quote or bullet at the start of a paragraph
_LIST_NUMBER = re.compile(r"^(\d+)(?=[.)]\s)")  # "1. " at the start of a paragraph starts a list


def escape_text(text: str) -> str:
    """Text that renders literally in GFM while staying readable in the raw file.

    A ``<`` that could open an HTML tag or autolink becomes ``&lt;``, an ``&`` that would start an
    entity becomes ``&amp;``, and a backslash goes before ``\\ ` * | ~``, before ``_`` at a word
    boundary (intraword underscores as in ``faster_rcnn`` are literal in GFM) and before ``[^`` and
    ``](``/``][`` (links and footnotes). :func:`escape_paragraph_start` handles what matters only at
    the start of a paragraph.
    """
    text = str(text).replace("\r", " ").replace("\n", " ")
    text = _ENTITY.sub("&amp;", text)
    out = []
    for index, char in enumerate(text):
        before = text[index - 1] if index > 0 else " "
        after = text[index + 1] if index + 1 < len(text) else " "
        if char == "<" and (after.isalpha() or after in "/!?"):  # could open a tag or an autolink
            out.append("&lt;")
        elif char in _ALWAYS:
            out.append("\\" + char)
        elif char == "_" and not (before.isalnum() and after.isalnum()):
            out.append("\\_")
        elif (char == "[" and after == "^") or (char == "]" and after in "(["):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def escape_paragraph_start(rendered: str) -> str:
    """A paragraph that starts like a heading, quote or list item gets that marker escaped."""
    if _BLOCK_MARKER.match(rendered):
        return "\\" + rendered
    number = _LIST_NUMBER.match(rendered)
    if number:
        return number.group(1) + "\\" + rendered[number.end() :]
    return rendered


class MarkdownRenderer(Renderer):
    def text(self, text: str) -> str:
        return escape_text(text)

    def code(self, text: str) -> str:
        # Inside a code span nothing is interpreted, except that GFM tables still split cells at "|".
        body = str(text).replace("\n", " ").replace("|", "\\|")
        fence = "``" if "`" in body else "`"
        pad = " " if "`" in body else ""
        return f"{fence}{pad}{body}{pad}{fence}"

    def strong(self, text: str) -> str:
        return f"**{escape_text(text)}**"

    def heading(self, level: int, text: str) -> str:
        return f"{'#' * level} {escape_text(text)}"

    def paragraph(self, rendered: str) -> str:
        return escape_paragraph_start(rendered)

    def caption(self, text: str) -> str:
        return f"*{escape_text(text)}*\n\n"

    def table(self, headers: tuple[str, ...], rows: list[list[str]], numeric: tuple[bool, ...]) -> str:
        lines = ["| " + " | ".join(escape_text(header) for header in headers) + " |"]
        lines.append("|" + "|".join("---:" if is_number else "---" for is_number in numeric) + "|")
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines)

    def figure(self, block: Figure, number: int) -> str:
        return f"![{escape_text(block.alt)}]({quote(block.file)})\n\n*Figure {number}. {escape_text(block.caption)}*"

    def bullets(self, items: list[str]) -> str:
        return "\n".join("- " + item for item in items)


def render_markdown(document: Document) -> str:
    chunks = [f"# {escape_text(document.title)}", *MarkdownRenderer().blocks(document)]
    return "\n\n".join(chunks) + "\n"
