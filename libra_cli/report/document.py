"""The report as a list of blocks, rendered to Markdown (``markdown.py``) or HTML (``html.py``).

Both formats walk the document the same way (:class:`Renderer`: the blocks in order, figures numbered from 1,
inline parts and table cells rendered and joined); a format only says how each piece is written.

Blocks hold raw text: every string — including the ones a dataset or a user provides (category names,
run labels, file names) — is escaped by the renderer for its own format, so no builder has to think
about escaping and nothing provided by a dataset can inject markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Code:
    """Inline code (setting names, paths)."""

    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Code | Strong
Cell = Inline | tuple[Inline, ...]


@dataclass(frozen=True)
class Heading:
    level: int  # 1 = the title, 2 = a section, 3 = a subsection
    text: str


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[Inline, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    numeric: tuple[bool, ...] = ()  # per column: right-aligned numbers
    caption: str | None = None


@dataclass(frozen=True)
class Figure:
    file: str  # a file name in the report folder
    alt: str
    caption: str  # one sentence saying what to look at


@dataclass(frozen=True)
class BulletList:
    items: tuple[tuple[Inline, ...], ...]


Block = Heading | Paragraph | Table | Figure | BulletList


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def para(*parts: Inline) -> Paragraph:
    return Paragraph(tuple(parts))


def table(headers: list[str], rows: list[list[Cell]], numeric: list[bool] | None = None, caption: str | None = None):
    return Table(tuple(headers), tuple(tuple(row) for row in rows), tuple(numeric or [False] * len(headers)), caption)


class Renderer:
    """The walk every format shares. A format implements how text, code, strong text, a heading, a paragraph,
    a table, a figure and a bullet list are written; :meth:`blocks` gives each block of a document rendered."""

    def text(self, text: str) -> str:
        raise NotImplementedError

    def code(self, text: str) -> str:
        raise NotImplementedError

    def strong(self, text: str) -> str:
        raise NotImplementedError

    def heading(self, level: int, text: str) -> str:
        """``level`` is already within 1..6."""
        raise NotImplementedError

    def paragraph(self, rendered: str) -> str:
        """A paragraph of inline parts, already rendered and joined."""
        raise NotImplementedError

    def caption(self, text: str) -> str:
        """A table's caption, with what separates it from the table."""
        raise NotImplementedError

    def table(self, headers: tuple[str, ...], rows: list[list[str]], numeric: tuple[bool, ...]) -> str:
        """``rows``: each row's cells, already rendered; ``numeric``: per column, right-aligned numbers."""
        raise NotImplementedError

    def figure(self, block: Figure, number: int) -> str:
        raise NotImplementedError

    def bullets(self, items: list[str]) -> str:
        """``items``: each item's inline parts, already rendered and joined."""
        raise NotImplementedError

    def inline(self, part: Inline) -> str:
        if isinstance(part, Code):
            return self.code(part.text)
        if isinstance(part, Strong):
            return self.strong(part.text)
        return self.text(part)

    def inlines(self, parts: tuple[Inline, ...]) -> str:
        return "".join(self.inline(part) for part in parts)

    def cell(self, cell: Cell) -> str:
        return self.inlines(cell) if isinstance(cell, tuple) else self.inline(cell)

    def render_table(self, block: Table) -> str:
        numeric = block.numeric or tuple(False for _ in block.headers)
        rows = [[self.cell(cell) for cell in row] for row in block.rows]
        return (self.caption(block.caption) if block.caption else "") + self.table(block.headers, rows, numeric)

    def blocks(self, document: Document) -> list[str]:
        """Each block of ``document`` rendered, in order (the title is the format's to write)."""
        rendered = []
        figure_number = 0
        for block in document.blocks:
            if isinstance(block, Heading):
                rendered.append(self.heading(max(1, min(block.level, 6)), block.text))
            elif isinstance(block, Paragraph):
                rendered.append(self.paragraph(self.inlines(block.parts)))
            elif isinstance(block, Table):
                rendered.append(self.render_table(block))
            elif isinstance(block, Figure):
                figure_number += 1
                rendered.append(self.figure(block, figure_number))
            elif isinstance(block, BulletList):
                rendered.append(self.bullets([self.inlines(item) for item in block.items]))
        return rendered
