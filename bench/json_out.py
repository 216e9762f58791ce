"""`--json-out PATH`, shared by every benchmark: keep the printed JSON object as a docs data file.

stdout stays the benchmark's one JSON object. With `--json-out docs/data/NAME.json` the same object
is also written there, wrapped with what the documentation prints under each figure: the exact
command, the UTC date and the git commit it ran on. `mkdocs build` renders the tables and plots of
the docs' benchmark pages from these files (docs/hooks.py), so a rerun updates the page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def add_json_out_argument(parser: argparse.ArgumentParser) -> None:
    """Add the `--json-out PATH` flag to a benchmark's parser."""
    parser.add_argument(
        "--json-out", default=None, metavar="PATH",
        help="also write the JSON object, with the command and date, to PATH (e.g. docs/data/NAME.json)",
    )


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_out(path: str | None, benchmark: str, result: dict, argv: list[str] | None = None) -> None:
    """Write `result` to `path` (nothing when `path` is None) as a docs data file."""
    if not path:
        return
    arguments = sys.argv[1:] if argv is None else list(argv)
    # The command as a reader would rerun it, without the --json-out that wrote this file.
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--json-out":
            skip = True
        elif not argument.startswith("--json-out="):
            kept.append(argument)
    arguments = kept
    script = Path(sys.argv[0]).resolve()
    script_name = f"bench/{script.name}" if script.parent == REPO_ROOT / "bench" else f"bench/{benchmark}.py"
    document = {
        "benchmark": benchmark,
        "command": shlex.join(["python", script_name, *arguments]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
        "transcribed": False,
        "result": result,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"[bench] wrote {target}", file=sys.stderr)
