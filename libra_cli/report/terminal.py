"""The report's tables in the terminal: a ``document.Table`` drawn with rich, so `libra analyze` prints
the same tables the report holds (one table builder for both, ``analysis_tables.py``)."""

from __future__ import annotations

import rich.table
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
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


class FittedTable:
    """A table drawn whole when the console is wide enough, else stacked: each row as its own small table of
    "header  value" lines, so that no cell is cut to "…" on an 80-column terminal or in a pipe.

    ``need`` is the width the whole table takes with every number whole and text folded at its longest word.
    """

    def __init__(self, wide: rich.table.Table, stacked: rich.table.Table, need: int) -> None:
        self.wide, self.stacked, self.need = wide, stacked, need

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide if self.need <= options.max_width else self.stacked

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        chosen = self.wide if self.need <= options.max_width else self.stacked
        return Measurement.get(console, options, chosen)


def _column_need(texts: list[Text], is_number: bool) -> int:
    """The narrowest a column can be without cutting: its longest number, or its longest word of text."""
    if is_number:
        return max(text.cell_len for text in texts)
    return max((len(word) for text in texts for word in text.plain.split()), default=1)


def render_rich(block: Table) -> FittedTable:
    """The block as a rich table with its caption as title and its numeric columns right-aligned, numbers
    never broken and text folded rather than cut; stacked row by row when even that is too wide."""
    numeric = block.numeric or tuple(False for _ in block.headers)
    title = escape(block.caption) if block.caption else None
    wide = rich.table.Table(title=title)
    for header, is_number in zip(block.headers, numeric, strict=True):
        if is_number:
            wide.add_column(escape(header), justify="right", no_wrap=True)
        else:
            wide.add_column(escape(header), justify="left", overflow="fold")
    for row in block.rows:
        wide.add_row(*(render_cell(cell) for cell in row))
    columns = [
        [Text(header), *(render_cell(row[index]) for row in block.rows)] for index, header in enumerate(block.headers)
    ]
    # Each column is padded by one space each side and separated by one rule; one rule closes the table.
    need = sum(_column_need(texts, is_number) + 3 for texts, is_number in zip(columns, numeric, strict=True)) + 1
    stacked = rich.table.Table(title=title, show_header=False)
    stacked.add_column(style="bold", overflow="fold")
    stacked.add_column(overflow="fold")
    for row in block.rows:
        for index, (header, cell) in enumerate(zip(block.headers, row, strict=True)):
            stacked.add_row(Text(header), render_cell(cell), end_section=index == len(row) - 1)
    return FittedTable(wide, stacked, need)
