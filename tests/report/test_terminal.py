"""The report's tables drawn in the terminal: constant text columns folded into the caption."""

from __future__ import annotations

from rich.console import Console

from libra_cli.report.document import Strong, table
from libra_cli.report.terminal import fold_constant_columns, render_rich


def test_constant_text_columns_move_into_the_caption_and_numbers_stay():
    block = table(
        ["run", "group", "classifier", "ratio", "n"],
        [["eql", "rare", "sigmoid", "0.5", "1"], ["eql", "frequent", "sigmoid", "0.5", "1"]],
        [False, False, False, True, True],
        caption="tail",
    )
    folded = fold_constant_columns(block)
    assert folded.headers == ("group", "ratio", "n")  # constant numbers are data, not labels: kept
    assert folded.rows == (("rare", "0.5", "1"), ("frequent", "0.5", "1"))
    assert folded.numeric == (False, True, True)
    assert folded.caption == "tail (run: eql; classifier: sigmoid)"
    one_row = table(["run", "x"], [["a", "1"]], [False, True])
    assert fold_constant_columns(one_row) is one_row  # nothing to fold in a single row


def test_rendered_table_shows_every_cell_with_markup_escaped():
    block = table(["name", "AP"], [["[red]x", "0.25"], [(Strong("all"),), "0.5"]], [False, True], caption="c [b]")
    console = Console(width=60, record=True)
    console.print(render_rich(block))
    text = console.export_text()
    assert "[red]x" in text and "c [b]" in text and "all" in text and "0.25" in text
    assert text.index("0.25") > text.index("[red]x")


def wide_block():
    """Like the features table: a level column and nine numbers of six characters per row."""
    headers = ["level", *(f"P{k} mean |x|" for k in range(2, 11))]
    rows = [[f"level {r}", *(f"{0.1 + r / 10 + k / 1000:.4f}" for k in range(9))] for r in range(3)]
    return table(headers, rows, [False, *([True] * 9)], caption="features")


def test_a_table_too_wide_for_80_columns_is_stacked_with_every_cell_whole():
    block = wide_block()
    console = Console(width=80, record=True)
    console.print(render_rich(block))
    text = console.export_text()
    # 10 columns of at least 6 characters plus borders and padding exceed 80: drawn row by row instead.
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for row in block.rows:
        for cell in row:
            assert cell in text  # e.g. "0.1000", "level 2": never cut to "0.1…" or "lev…"
    for header in block.headers:
        assert header in text


def test_a_table_that_fits_is_drawn_whole():
    console = Console(width=200, record=True)
    console.print(render_rich(wide_block()))
    lines = console.export_text().splitlines()
    # One table: a line per row under one header line (title, top border, header, rule, 3 rows, bottom border).
    assert sum("│ level " in line for line in lines) == 3 and len(lines) == 8
