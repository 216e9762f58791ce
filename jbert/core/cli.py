"""Options dataclasses -> argparse flags: the one place where a field becomes a command-line flag.

An options dataclass declares each field with `option(default, help, **metadata)`; `add_options`
adds one flag per field to a parser and `options_from_args` builds the dataclass back from the
parsed namespace. `--help`, the flags and the Python API therefore cannot disagree.

    @dataclass
    class ScoreOptions:
        export_dir: str = option(None, "Export directory.", positional=True)
        batch_size: int = option(32, "Texts per onnxruntime call.")
        show_progress: bool = option(True, "Progress bar.", negative_flag="--quiet", negative_help="No progress bar.")

    parser = argparse.ArgumentParser()
    add_options(parser, ScoreOptions)
    options = options_from_args(ScoreOptions, parser.parse_args(argv))

Spelling: every flag is `--field_name` first, then `--field-name` (both always accepted; the
underscore form first because it is the field name, the YAML key and what transformers' parser
lists first).

Metadata keys read here (every other key, e.g. `choices` or `metavar`, goes to `add_argument`):

    positional      the field is a positional argument (METAVAR = the name in capitals)
    negative_flag   a default-True bool is switched off by this flag only (e.g. "--quiet")
    negative_help   the help of the negative flag
    aliases         further option strings (a str or a list), e.g. ["--resume"]

Two styles of bool and help, chosen per parser with `bools=`:

    "switch"   (export, serve) a bool is `--flag` (store_true); Optional[bool] is `--flag` or
               unset (None); valued flags end their help with "(default: X)" unless X is None.
    "value"    transformers.HfArgumentParser 4.57's rules, so `train.py` keeps its flags: a bool
               takes an optional value (`--flag`, `--flag true`, `--flag no`); a default-True bool
               also gets `--no_flag`/`--no-flag`; Optional[bool] with default None needs a value;
               the help gets no suffix: build the parser with `hf_argument_parser`, whose
               ArgumentDefaultsHelpFormatter prints "(default: X)" on every flag as HF's does.

Optional[T] fields take values of type T; list[T] fields take one or more values (nargs="+").
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence

# Metadata keys consumed here; everything else in a field's metadata is passed to add_argument.
_OWN_KEYS = ("positional", "negative_flag", "negative_help", "aliases")
BOOL_STYLES = ("switch", "value")
TRUE_WORDS = ("yes", "true", "t", "y", "1")
FALSE_WORDS = ("no", "false", "f", "n", "0")


def option(default: Any = None, help: str = "", **metadata: Any) -> Any:  # noqa: A002 (argparse's word)
    """A dataclass field with its one-line help and any flag metadata (see the module docstring).

    `default` is the value when the flag is not given (None for positionals); a list default is
    copied per instance.
    """
    metadata = {"help": help, **metadata}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_names(name: str) -> list[str]:
    """The option strings of a field: `--name_with_underscores` first, then `--name-with-dashes`."""
    underscored = f"--{name}"
    dashed = f"--{name.replace('_', '-')}"
    return [underscored] if dashed == underscored else [underscored, dashed]


def string_to_bool(value: str | bool) -> bool:
    """A bool flag's value: yes/no, true/false, t/f, y/n, 1/0 (any case), as HfArgumentParser reads it."""
    if isinstance(value, bool):
        return value
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {value} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive)."
    )


def _unwrap_optional(annotation) -> tuple[Any, bool]:
    """(T, True) for Optional[T] / T | None, else (annotation, False)."""
    arguments = typing.get_args(annotation)
    if type(None) in arguments and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in arguments if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"only Optional[T] unions become flags, not {annotation}")
        return rest[0], True
    return annotation, False


def _default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _with_default(help_text: str, default) -> str:
    # argparse %-formats help strings: a literal % in a default must be doubled.
    return f"{help_text} (default: {str(default).replace('%', '%%')})"


def add_options(parser: argparse.ArgumentParser, options_class, *, bools: str = "switch") -> None:
    """Add one argument per field of the dataclass `options_class` to `parser`, in field order.

    `bools` is "switch" (export.py, serve_onnx.py) or "value" (HfArgumentParser's rules, for
    train.py); the module docstring says what each does. The flag's dest is the field name.
    """
    if bools not in BOOL_STYLES:
        raise ValueError(f"bools must be one of {BOOL_STYLES}, not {bools!r}")
    hints = typing.get_type_hints(options_class)  # resolves `from __future__ import annotations` strings
    for field in dataclasses.fields(options_class):
        _add_field(parser, field, hints[field.name], bools)


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field, annotation, bools: str) -> None:
    metadata = dict(field.metadata)
    own = {key: metadata.pop(key) for key in _OWN_KEYS if key in metadata}
    default = _default_of(field)
    value_type, optional = _unwrap_optional(annotation)
    aliases = own.get("aliases", [])
    names = flag_names(field.name) + ([aliases] if isinstance(aliases, str) else list(aliases))

    if own.get("positional"):
        metadata.setdefault("metavar", field.name.upper())
        parser.add_argument(field.name, **metadata)
        return
    if own.get("negative_flag"):
        if value_type is not bool or default is not True:
            raise TypeError(f"{field.name}: negative_flag needs a bool field whose default is True")
        parser.add_argument(own["negative_flag"], dest=field.name, action="store_false",
                            help=own.get("negative_help", metadata.get("help")))
        return
    if value_type is bool:
        _add_bool(parser, field.name, names, metadata, default, optional, bools)
        return
    if typing.get_origin(value_type) is list:
        (item_type,) = typing.get_args(value_type)
        metadata.update(type=item_type, nargs="+")
    else:
        metadata["type"] = value_type
    if default is dataclasses.MISSING:
        metadata["required"] = True
    else:
        metadata["default"] = default
        if bools == "switch" and default is not None and metadata.get("help"):
            metadata["help"] = _with_default(metadata["help"], default)
    parser.add_argument(*names, dest=field.name, **metadata)


def _add_bool(parser, name: str, names: list[str], metadata: dict, default, optional: bool, bools: str) -> None:
    if bools == "switch":
        if optional:  # unset stays None: "not asked", distinct from an explicit False
            parser.add_argument(*names, dest=name, action="store_const", const=True, default=None, **metadata)
        elif default is True:
            raise TypeError(f"{name}: a default-True bool switch needs negative_flag=... to be switched off")
        else:
            parser.add_argument(*names, dest=name, action="store_true", **metadata)
        return
    # HfArgumentParser 4.57: `--flag` alone means True, `--flag false` False; Optional[bool] with a
    # None default takes a value but no bare form; a default-True bool also gets --no_flag.
    negative_metadata = dict(metadata)
    if not optional or default not in (None, dataclasses.MISSING):
        metadata.update(default=False if default is dataclasses.MISSING else default, nargs="?", const=True)
    parser.add_argument(*names, dest=name, type=string_to_bool, **metadata)
    if default is True:
        parser.add_argument(f"--no_{name}", f"--no-{name.replace('_', '-')}", dest=name, action="store_false",
                            **{**negative_metadata, "default": False})


def hf_argument_parser(options_class, **parser_kwargs) -> argparse.ArgumentParser:
    """A parser with `options_class`'s flags as `transformers.HfArgumentParser(options_class)` makes them.

    Same option strings, bool forms, defaults and `--help` text (ArgumentDefaultsHelpFormatter),
    without importing transformers.
    """
    parser_kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
    parser = argparse.ArgumentParser(**parser_kwargs)
    add_options(parser, options_class, bools="value")
    return parser


def options_from_args(options_class, args: argparse.Namespace, **extra: Any):
    """The dataclass built from a parsed namespace (fields only; `extra` overrides or adds values)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(options_class) if hasattr(args, field.name)}
    return options_class(**{**values, **extra})


def parse_options(options_class, argv: Sequence[str] | None = None, *, bools: str = "switch", **parser_kwargs):
    """Parse `argv` (default: sys.argv[1:]) into `options_class` with a parser of its flags alone."""
    parser = argparse.ArgumentParser(**parser_kwargs)
    add_options(parser, options_class, bools=bools)
    return options_from_args(options_class, parser.parse_args(argv))
