"""Error types shared by every stage, and the CLI wrapper that turns them into exit codes.

A user's mistake (bad file, bad option) is a `UserError`: one clear message, exit code 2, no
traceback. A model that fails its parity check is a `ValidationError`: exit code 1 with the
figures. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input or options from the user: says what is wrong, where, and how to fix it."""

    exit_code = 2


class ValidationError(Exception):
    """An artefact was produced but failed its numerical checks (e.g. ONNX vs PyTorch parity)."""

    exit_code = 1


def format_problems(title: str, problems: Sequence[str]) -> str:
    """Join several problems into one message so the user can fix them all at once."""
    if len(problems) == 1:
        return f"{title}: {problems[0]}"
    return title + ":\n" + "\n".join(f"  - {p}" for p in problems)


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a CLI entry point, mapping `UserError`/`ValidationError` to a message and exit code."""
    try:
        main(argv)
    except (UserError, ValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
