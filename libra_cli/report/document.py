"""The report as a list of blocks, rendered to Markdown (``markdown.py``) or HTML (``html.py``).

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
