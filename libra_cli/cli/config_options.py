"""Command-line options generated from the config dataclasses: one option per field.

A field's name gives the flag (``batch_size`` → ``--batch-size``), its type the kind of option (``bool`` →
``--x/--no-x``; ``int``, ``float``, ``str`` typed values; ``PathStr`` a path; a ``tuple`` a comma-separated
list such as ``--anchor-sizes 16,32,64,128,256``), its comment in ``config.py`` the help text, and its
section the help panel. Every option defaults to None, "not given", so that only the flags a user types
override the preset. Adding a setting to a dataclass is therefore one line, and it is on the command line.

The comments are read once from the dataclasses' source with ``tokenize`` and ``ast``: a trailing
``# ...`` on the field's line, and the ``#`` lines directly above it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import sys
import tokenize
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import typer
import yaml
from rich.markup import escape

from libra_cli.config import SECTIONS, PathStr
from libra_cli.errors import LibraError

# Help panel of each config section in `--help`; a section not listed gets its name as title.
PANELS = {"data": "Data", "model": "Model", "libra": "Libra components", "train": "Train"}
_TOKENS_WITHOUT_CODE = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)


@dataclass(frozen=True)
class ConfigOption:
    """The command-line option of one config field; its keyword parameter is the field's name."""

    section: str
    field: str
    names: tuple[str, ...]  # declarations, e.g. ("--num-workers", "--workers") or ("--bfp/--no-bfp",)
    value_type: type  # what Typer parses: bool, int, float, str or Path; str for a list
    item_type: type | None  # the items' type of a comma-separated list (tuple fields), else None
    help: str  # the field's comment
    default: str | None  # the dataclass default as --help shows it; None: not shown
    panel: str

    def parameter(self) -> inspect.Parameter:
        """The keyword parameter Typer reads this option from."""
        metavar = f"{self.item_type.__name__.upper()},…" if self.item_type is not None else None
        text = self.help if self.default is None else f"{self.help} (default: {self.default})"
        # The option's own default is None ("not given"), so the dataclass default is part of the help.
        option = typer.Option(
            None, *self.names, help=escape(text), rich_help_panel=self.panel, show_default=False, metavar=metavar
        )
        return inspect.Parameter(self.field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=self.value_type)

    def value(self, given: Any) -> Any:
        """The config value of what the user typed: paths as strings, lists item by item as YAML (the
        config's type check then applies)."""
        if self.item_type is not None:
            return [yaml.safe_load(item) for item in given.split(",")]
        return str(given) if isinstance(given, Path) else given


def config_options(
    sections: Mapping[str, type] = SECTIONS, aliases: Mapping[tuple[str, str], str] | None = None
) -> list[ConfigOption]:
    """One option per field of every section's dataclass, in section and field order.

    ``aliases`` maps (section, field) to a second flag name kept for an option, e.g. ``--workers`` for
    data.num_workers (for a bool the ``--no-`` form follows).
    """
    options = []
    for section, cls in sections.items():
        hints = get_type_hints(cls)
        for item in dataclasses.fields(cls):
            value_type, item_type = _typer_type(hints[item.name])
            names = [_flag(item.name, value_type)]
            if aliases and (section, item.name) in aliases:
                names.append(_flag(aliases[section, item.name].removeprefix("--"), value_type))
            default = None if item.default is dataclasses.MISSING else item.default
            options.append(
                ConfigOption(
                    section=section,
                    field=item.name,
                    names=tuple(names),
                    value_type=value_type,
                    item_type=item_type,
                    help=field_comment(cls, item.name),
                    default=_shown_default(default),
                    panel=PANELS.get(section, section.title()),
                )
            )
    return options


def overrides_from_options(options: Sequence[ConfigOption], given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` for the options given (not None) in ``given`` (parameter → value)."""
    overrides: dict[str, dict[str, Any]] = {}
    for option in options:
        if given.get(option.field) is not None:
            overrides.setdefault(option.section, {})[option.field] = option.value(given[option.field])
    return overrides


def parse_setting(entry: str) -> tuple[str, str, Any]:
    """``"model.min_size=320"`` → ``("model", "min_size", 320)``: the value is read as YAML, so ``true``,
    ``0.5``, ``[8, 16]`` and ``null`` are typed; the config checks the type and the name."""
    key, equals, text = entry.partition("=")
    section, dot, name = key.strip().partition(".")
    if not (equals and dot and section and name):
        raise LibraError(f"--set {entry}: expected SECTION.FIELD=VALUE, e.g. --set model.min_size=320")
    try:
        return section, name, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LibraError(f"--set {entry}: the value is not valid YAML") from exc


def with_config_options(command: Callable[..., Any], options: Sequence[ConfigOption]) -> Callable[..., Any]:
    """Give ``command`` — which takes the options as ``**fields`` — one keyword parameter per option, for
    Typer to read. They follow the command's positional parameters and precede its keyword-only ones, so
    `--help` shows the config panels before the command's own options."""
    own = [p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    positional = [p for p in own if p.kind is not p.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind is p.KEYWORD_ONLY]
    parameters = [*positional, *(option.parameter() for option in options), *keyword]
    names = [name for parameter in parameters for name in _declared_flags(parameter)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{command.__name__}: flags declared twice: {', '.join(repeated)}")
    command.__signature__ = inspect.Signature(parameters)
    return command


def field_comment(cls: type, name: str) -> str:
    """The comment of field ``name`` where it is declared (``cls`` or a dataclass it inherits from)."""
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return " ".join(_source_comments(klass.__module__).get(klass.__name__, {}).get(name, ()))
    return ""


@functools.cache
def _source_comments(module_name: str) -> dict[str, dict[str, list[str]]]:
    """class name → field name → its comment lines, for the top-level classes of a module's source."""
    source = inspect.getsource(sys.modules[module_name])
    comments: dict[int, str] = {}  # line → comment text
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in _TOKENS_WITHOUT_CODE:
            code_lines.update(range(token.start[0], token.end[0] + 1))
    classes: dict[str, dict[str, list[str]]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = classes.setdefault(node.name, {})
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            above, line = [], statement.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            trailing = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
            fields[statement.target.id] = above + trailing
    return classes


def _typer_type(annotation: Any) -> tuple[type, type | None]:
    """(what Typer parses, the item type of a comma-separated list or None) for a field's annotation."""
    if type(None) in get_args(annotation):  # X | None: the option is X, None is "not given"
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is tuple:
        return str, get_args(annotation)[0]
    if annotation is PathStr:
        return Path, None
    return annotation, None


def _declared_flags(parameter: inspect.Parameter) -> list[str]:
    """The flags a Typer option parameter declares (``"--bfp/--no-bfp"`` is two); none for an argument."""
    declarations = getattr(parameter.default, "param_decls", None) or ()
    return [name for declaration in declarations for name in declaration.split("/")]


def _flag(name: str, value_type: type) -> str:
    flag = name.replace("_", "-")
    return f"--{flag}/--no-{flag}" if value_type is bool else f"--{flag}"


def _shown_default(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(_shown_default(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
