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
