"""Griffe extension: option fields appear in the API reference with their default and their help.

An options dataclass declares each field as `name: type = option(default, "help ...", **metadata)`
(`jbert.core.cli.option`). Read statically, the field's value is that whole call, so the reference
showed `option(None, 'Also write an int8 copy ...', metavar='TARGET')` where a reader wants `None`.
This extension rewrites each such attribute: its value becomes the default (nothing for a positional
argument, which has none) and its docstring the help text, so the class signature shows real
defaults and every field is listed with its one-line help.

The default and help are read from the imported dataclass when it imports (help texts built with
f-strings come out as the user sees them in --help), else from the call's source.
Loaded by mkdocs.yml: `plugins: mkdocstrings: handlers: python: options: extensions:`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

import griffe

# The field helper's name; `_option`/`_opt` are the stage-local helpers it replaces, kept here so a
# module not yet moved to jbert.core.cli still renders well.
OPTION_FUNCTIONS = {"option"}


def _call_arguments(call: griffe.ExprCall) -> tuple[list[Any], dict[str, Any]]:
    positional, keywords = [], {}
    for argument in call.arguments:
        if isinstance(argument, griffe.ExprKeyword):
            keywords[argument.name] = argument.value
        else:
            positional.append(argument)
    return positional, keywords


def _source_text(expression: Any) -> str | None:
    """The text of a string literal argument (griffe keeps literals as their source), else its source."""
    if expression is None:
        return None
    try:
        value = ast.literal_eval(str(expression))
    except (ValueError, SyntaxError):
        return str(expression)
    return value if isinstance(value, str) else str(expression)


def _runtime_field(attr: griffe.Attribute) -> dataclasses.Field | None:
    """The dataclass field behind `attr` from the imported module, or None when it cannot be imported."""
    owner = attr.parent
    try:
        # mkdocstrings' `paths` feed griffe, not sys.path: import from the tree griffe read.
        root = str(Path(owner.module.filepath).parents[owner.module.path.count(".")])
        if owner.module.path.rsplit(".", 1)[-1] == "__init__" or Path(owner.module.filepath).name == "__init__.py":
            root = str(Path(owner.module.filepath).parents[owner.module.path.count(".") + 1])
        if root not in sys.path:
            sys.path.insert(0, root)
        module = importlib.import_module(owner.module.path)
        cls = getattr(module, owner.name)
        return {field.name: field for field in dataclasses.fields(cls)}.get(attr.name)
    except Exception:  # noqa: BLE001 - any import problem: fall back to the source, never fail the build here
        return None


class OptionFields(griffe.Extension):
    """Rewrites `x: T = option(default, help, ...)` attributes of classes to `x: T = default` + help."""

    def on_attribute_instance(self, *, node, attr: griffe.Attribute, agent, **kwargs: Any) -> None:
        """Called by griffe for every attribute it loads."""
        call = attr.value
        if not (isinstance(call, griffe.ExprCall) and attr.parent is not None and attr.parent.is_class):
            return
        if str(call.function).rsplit(".", 1)[-1] not in OPTION_FUNCTIONS:
            return
        positional, keywords = _call_arguments(call)
        default_source = positional[0] if positional else keywords.get("default", "None")
        help_source = positional[1] if len(positional) > 1 else keywords.get("help", keywords.get("help_text"))
        field = _runtime_field(attr)
        if field is not None:
            is_positional = bool(field.metadata.get("positional"))
            default = field.default if field.default is not dataclasses.MISSING else None
            default_text = repr(default)
            try:  # keep the value as written (1e-4, not 0.0001) when the source says the same
                if ast.literal_eval(str(default_source)) == default:
                    default_text = str(default_source)
            except (ValueError, SyntaxError):
                pass
            help_text = field.metadata.get("help")
        else:
            is_positional = str(keywords.get("positional", "False")) == "True"
            default_text = str(default_source)
            help_text = _source_text(help_source)
        attr.value = None if is_positional else default_text
        if help_text and attr.docstring is None:
            attr.docstring = griffe.Docstring(help_text, parent=attr)
