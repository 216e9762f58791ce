"""YAML recipe values checked against the options dataclass's field types, every problem at once.

A value from the command line is always a string that argparse converts with the field's type; a
value from a YAML recipe arrives already typed by YAML, and argparse passes a non-string default
through unchecked. So `seed: [1, 2]` or `train_file: [a, b]` used to travel into the run and end in
a traceback far from the recipe. `typed_recipe_values` checks each value against the field's type
hint and returns the converted values, or the problems, each naming the key, its value and what
was expected. What is accepted (docs/training.md, "YAML recipes"):

    bool             true/false (YAML's own booleans: also yes/no, on/off), 0 or 1, or a string
                     the command line accepts: yes/no, true/false, t/f, y/n, 1/0 (any case)
    int              an integer, or a string holding one ("128"); not 1.5, not true
    float            a number, or a string float() reads: YAML 1.1 reads 5e-5 (no dot) as a string
    str              a string; an integer becomes its digits (checkpointing_steps: 500, label_column: 1)
    Optional[...]    also null (or an empty value), meaning "not set"
    choices          the value must be one of them (argparse checks choices only for flags)
"""

from __future__ import annotations

import dataclasses
import reprlib
import typing
from typing import Any

from jbert.core.cli import FALSE_WORDS, TRUE_WORDS

# Bounded repr of a value in a message: a recipe can hold a huge or deeply nested value (YAML
# aliases make a small file expand), and the message must stay one readable line.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 4
_SHORT.maxlevel = 2

_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def short_repr(value: Any) -> str:
    """The value as YAML gave it, cut to one short line."""
    return _SHORT.repr(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a decimal number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def _convert(value: Any, value_type: type) -> tuple[bool, Any]:
    """(True, converted value) when `value` is acceptable for `value_type`, else (False, None)."""
    if value_type is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, int) and value in (0, 1):
            return True, bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return True, value.strip().lower() in TRUE_WORDS
        return False, None
    if isinstance(value, bool):  # bool is an int subclass: true is not the number 1 here
        return False, None
    if value_type is int:
        if isinstance(value, int):
            return True, value
        if isinstance(value, str):
            try:
                return True, int(value.strip())
            except ValueError:
                return False, None
        return False, None
    if value_type is float:
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value.strip())
            except ValueError:
                return False, None
        return False, None
    if value_type is str:
        if isinstance(value, str):
            return True, value
        if isinstance(value, int):
            return True, str(value)
        return False, None
    raise TypeError(f"no YAML check for fields of type {value_type}")


def _field_type(annotation) -> tuple[type, bool]:
    """(T, optional) of a field annotated T or Optional[T]."""
    arguments = typing.get_args(annotation)
    rest = [a for a in arguments if a is not type(None)]
    if type(None) in arguments and len(rest) == 1:
        return rest[0], True
    return annotation, False


def typed_recipe_values(options_class, values: dict) -> tuple[dict, list[str]]:
    """(converted values, problems) of recipe `values` for the dataclass `options_class`.

    Unknown keys are problems too. Each problem names the key, the value and what was expected, so
    one message lists everything to fix in the file.
    """
    hints = typing.get_type_hints(options_class)
    fields = {item.name: item for item in dataclasses.fields(options_class)}
    converted: dict = {}
    problems: list[str] = []
    unknown = sorted(short_repr(key) if not isinstance(key, str) else key for key in values if key not in fields)
    if unknown:
        problems.append(f"unknown options {unknown}; see train.py --help for the names")
    for name, value in values.items():
        if name not in fields:
            continue
        value_type, optional = _field_type(hints[name])
        choices = fields[name].metadata.get("choices")
        if value is None:
            if optional:
                converted[name] = None
            else:
                problems.append(f"{name}: an empty value (null), expected {_EXPECTED[value_type]}; give a value or "
                                "remove the line for the default")
            continue
        accepted, typed = _convert(value, value_type)
        if not accepted:
            problems.append(f"{name}: {short_repr(value)} is {_kind(value)}, expected {_EXPECTED[value_type]}"
                            + (" or null" if optional else "") + _hint(value, value_type))
        elif choices is not None and typed not in choices:
            problems.append(f"{name}: {short_repr(value)} is not one of {list(choices)}")
        else:
            converted[name] = typed
    return converted, problems


def _hint(value: Any, value_type: type) -> str:
    if isinstance(value, list) and value_type is str:
        return " (one value; where several are allowed, e.g. --task mlm files or columns, one string separated by commas)"
    if isinstance(value, list):
        return " (one value, not a list)"
    if value_type is str and isinstance(value, (bool, float)):
        return " (quote it to keep it as text)"
    return ""
