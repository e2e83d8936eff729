"""The report's tables in the terminal: a ``document.Table`` drawn with rich, so `libra analyze` prints
the same tables the report holds (one table builder for both, ``analysis_tables.py``)."""

from __future__ import annotations

import rich.table
from rich.markup import escape
from rich.text import Text

from libra_cli.report.document import Cell, Code, Strong, Table


def render_cell(cell: Cell) -> Text:
    parts = cell if isinstance(cell, tuple) else (cell,)
    text = Text()
    for part in parts:
        if isinstance(part, Strong):
            text.append(part.text, style="bold")
        elif isinstance(part, Code):
            text.append(part.text, style="cyan")
        else:
            text.append(str(part))
    return text


def fold_constant_columns(block: Table) -> Table:
    """The table with each text column that holds one value in every row (of two or more) moved into the
    caption as "header: value", e.g. the run and classifier columns of a one-run table."""
    if len(block.rows) < 2:
        return block
    numeric = block.numeric or tuple(False for _ in block.headers)
    constant = [
        index
        for index, is_number in enumerate(numeric)
        if not is_number and len({str(row[index]) for row in block.rows}) == 1
    ]
    if not constant or len(constant) == len(block.headers):
        return block
    keep = [index for index in range(len(block.headers)) if index not in constant]
    folded = "; ".join(f"{block.headers[index]}: {block.rows[0][index]}" for index in constant)
    return Table(
        tuple(block.headers[index] for index in keep),
        tuple(tuple(row[index] for index in keep) for row in block.rows),
        tuple(numeric[index] for index in keep),
        f"{block.caption} ({folded})" if block.caption else folded,
    )


def render_rich(block: Table) -> rich.table.Table:
    """A rich table with the block's caption as its title and its numeric columns right-aligned."""
    numeric = block.numeric or tuple(False for _ in block.headers)
    table = rich.table.Table(title=escape(block.caption) if block.caption else None)
    for header, is_number in zip(block.headers, numeric, strict=True):
        table.add_column(escape(header), justify="right" if is_number else "left")
    for row in block.rows:
        table.add_row(*(render_cell(cell) for cell in row))
    return table
