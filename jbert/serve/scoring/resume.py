"""What lets an interrupted scoring run continue: where its leftovers are and whether they are still its own.

A single output file is written as a hidden `.NAME.partial` beside the target, with a small
`.NAME.partial.json` saying how many rows and bytes are done; a shard directory keeps a
`.jbert-progress.json` (see `jbert.serve.scoring.shards`). Both record a fingerprint (input files,
model file, columns, output layout): `--resume` continues only when it is unchanged, since rows of
two different runs in one output would be wrong without any error to show it.
"""

from __future__ import annotations

from pathlib import Path

from jbert.core.errors import UserError
from jbert.serve.scoring.inputs import filesystem_for, is_remote

STATE_VERSION = 1


def partial_paths(output: Path) -> tuple[Path, Path]:
    """(the partial output file, its state file) of a single-file run writing `output`."""
    return output.with_name(f".{output.name}.partial"), output.with_name(f".{output.name}.partial.json")


def file_fingerprint(options, classifier, text_column: str, pair_column: str | None, output_format: str) -> dict:
    """What must be identical for --resume to continue a single-file run (input file, model, output layout)."""
    if is_remote(options.input):
        filesystem, path = filesystem_for(options.input)
        info = filesystem.info(path)
        name, size, modified = options.input, info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")
    else:
        stat = Path(options.input).stat()
        name, size, modified = str(Path(options.input).absolute()), stat.st_size, stat.st_mtime_ns
    return {
        "input": name,
        "input_size": size,
        "input_mtime_ns": modified,
        "model_file": str(classifier.model_path.absolute()),
        "text_column": text_column,
        "text_pair_column": pair_column,
        "output_format": output_format,
        "output_encoding": options.output_encoding,
        "all_scores": options.all_scores,
        "truncate": options.truncate,
        "max_text_chars": options.max_text_chars,
        "long_text": options.long_text,
    }


def directory_fingerprint(files: list[str], options, classifier, text_column: str, pair_column: str | None,
                          output_format: str) -> dict:
    """What must be identical for --resume to continue a shard-directory run."""
    sizes = []
    for source in files:
        filesystem, path = filesystem_for(source)
        info = filesystem.info(path)
        sizes.append([source, info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")])
    return {
        "inputs": sizes, "model_file": str(classifier.model_path), "text_column": text_column,
        "text_pair_column": pair_column, "format": output_format, "chunk_size": options.chunk_size,
        "all_scores": options.all_scores, "truncate": options.truncate,
        "max_text_chars": options.max_text_chars, "long_text": options.long_text,
    }


def check_same_run(where, saved_state: dict, fingerprint: dict, version: int | None = None) -> None:
    """UserError unless `saved_state` (an interrupted run's state) has this run's fingerprint (and `version`)."""
    changed = [key for key, value in fingerprint.items() if saved_state.get("fingerprint", {}).get(key) != value]
    if not changed and version is not None and saved_state.get("version") != version:
        changed = ["its format"]
    if changed:
        raise UserError(f"cannot resume {where}: {', '.join(changed)} changed since the interrupted run; "
                        "pass --overwrite to start over")
