"""One validator for every command: `libra config` and `libra train` refuse the same settings in one wording,
``section.field (--flag): problem; got VALUE``, and every numeric setting has a declared range."""

from __future__ import annotations

import dataclasses
from typing import get_args, get_type_hints

import pytest
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import FIELD_RULES, SECTIONS

runner = CliRunner()


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        # A probability lies in [0, 1]: 2 and -1 are no flip probability.
        (["--hflip-prob", "2"], "error: data.hflip_prob (--hflip-prob): must lie in [0, 1]; got 2.0"),
        (["--hflip-prob", "-1"], "error: data.hflip_prob (--hflip-prob): must lie in [0, 1]; got -1.0"),
        # λ is an image frequency threshold (EQL §3): a negative one marks no class and is a typo.
        (["--eql-lambda", "-1"], "error: libra.eql_lambda (--eql-lambda): must lie in [0, 1]; got -1.0"),
        # A count of iterations must be at least one.
        (["--max-iters", "0"], "error: train.max_iters (--max-iters): must be >= 1; got 0"),
        # The one wording holds for checks across fields too.
        (
            ["--min-size", "300", "--max-size", "200"],
            "error: model.max_size (--max-size): must be at least model.min_size (300); got 200",
        ),
    ],
)
@pytest.mark.parametrize("command", ["config", "train"])
def test_config_and_train_refuse_a_bad_value_with_the_same_line(command, flags, line, tmp_path):
    result = runner.invoke(app, [command, *flags, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert [text for text in result.output.splitlines() if text.strip()] == [line]
    assert not (tmp_path / "run").exists()  # nothing written


def _numeric(annotation) -> bool:
    kinds = {annotation, *get_args(annotation)}
    for kind in list(kinds):
        kinds |= set(get_args(kind))  # tuple[int, ...] | None
    return bool(kinds & {int, float}) and bool not in kinds


def test_every_numeric_setting_has_a_declared_range():
    # Every count, size, probability and rate is range-checked: a number field without a FIELD_RULES entry
    # would accept anything its type allows (as hflip_prob = 2 once did).
    missing = [
        f"{section}.{item.name}"
        for section, cls in SECTIONS.items()
        for item in dataclasses.fields(cls)
        if _numeric(get_type_hints(cls)[item.name]) and (section, item.name) not in FIELD_RULES
    ]
    assert missing == []
