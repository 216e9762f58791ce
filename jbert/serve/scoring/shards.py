"""A directory of scored shards: preparing it, filling it in-process (local engine), its manifest.

    scored/
      part-00000-0000000001.parquet   input file 0, records 1..chunk_size
      part-00000-0000004097.parquet
      part-00001-0000000001.parquet   input file 1
      manifest.json                   written last: inputs, rows in/out/with errors, model, seconds

Shard names sort in input order; each shard holds the input columns, the prediction columns and
the row-id columns `source_file`, `source_row`. Shards are written under a temporary name and
renamed, and `manifest.json` appears only when every row is written, so a directory without it
is an interrupted run: `--resume` continues it (local engine) from the last finished shard.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid

from jbert.core.storage import is_storage_full, storage_full_error
from jbert.core.errors import UserError
from jbert.core.progress import Progress
from jbert.serve.scoring.inputs import filesystem_for
from jbert.serve.scoring.resume import check_same_run, directory_fingerprint
from jbert.serve.scoring.tables import read_file_tables, score_table, write_shard

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
PROGRESS_NAME = ".jbert-progress.json"
MANIFEST_VERSION = 1
# Temporary names (see write_json_atomically and tables.write_shard): "." + final name + "." + uuid + ".tmp".
_TEMPORARY_PREFIXES = (".part-", f".{MANIFEST_NAME}.", f".{PROGRESS_NAME}.")


def prepare_output_directory(output: str, overwrite: bool, resume: bool):
    """(filesystem, path) of the output directory, created; refuses to mix with an earlier run's shards."""
    filesystem, path = filesystem_for(output)
    if filesystem.exists(path) and not filesystem.isdir(path):
        raise UserError(f"output {output} is a file; shards are written into a directory: give a directory such as scored/")
    if filesystem.isdir(path):
        ours = [p for p in filesystem.ls(path, detail=False)
                if posixpath.basename(p).startswith(("part-", MANIFEST_NAME, PROGRESS_NAME) + _TEMPORARY_PREFIXES)]
        if ours and overwrite:
            for leftover in ours:
                filesystem.rm(leftover)
        elif ours and resume:
            # A shard or progress file being written when the run was killed: rewritten below.
            for half_written in (p for p in ours if posixpath.basename(p).startswith(_TEMPORARY_PREFIXES)):
                filesystem.rm(half_written)
        elif ours and not resume:
            done = filesystem.exists(posixpath.join(path, MANIFEST_NAME))
            raise UserError(
                f"output directory {output} already holds {'a finished' if done else 'an interrupted'} run's shards; "
                f"pass --overwrite to replace them{'' if done else ' or --resume to continue (local engine)'}, "
                "or choose another directory"
            )
    filesystem.makedirs(path, exist_ok=True)
    return filesystem, path


def write_json_atomically(filesystem, path: str, name: str, data: dict) -> None:
    """Write `data` as `name` in `path` through a temporary file, so a reader never sees half of it."""
    temporary = posixpath.join(path, f".{name}.{uuid.uuid4().hex}.tmp")
    with filesystem.open(temporary, "wb") as handle:
        handle.write(json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))
    filesystem.mv(temporary, posixpath.join(path, name))


def build_manifest(engine: str, files: list[str], rows_in: dict[int, int], shards: list[dict], classifier_info: dict,
                   export_dir: str, output_format: str, seconds: float, **details) -> dict:
    """The manifest of a finished run (see the module docstring); `details`: engine settings."""
    shards = sorted(shards, key=lambda s: s["shard"])
    return {
        "version": MANIFEST_VERSION,
        "engine": engine,
        "inputs": [{"file": path, "rows": rows_in.get(i, 0)} for i, path in enumerate(files)],
        "rows_in": sum(rows_in.values()),
        "rows_out": sum(s["rows"] for s in shards),
        "rows_with_errors": sum(s["errors"] for s in shards),
        "rows_truncated": sum(s["truncated"] for s in shards),
        "export_dir": export_dir,
        "model_file": classifier_info.get("model_file"),
        "model": classifier_info.get("model"),
        "format": output_format,
        "row_id_columns": ["source_file", "source_row"],
        "shards": shards,
        "seconds": round(seconds, 3),
        **details,
    }


def check_complete(manifest: dict) -> None:
    """Rows in must equal rows out: anything else is a bug, never a user's mistake."""
    if manifest["rows_in"] != manifest["rows_out"]:
        raise RuntimeError(f"scoring lost or duplicated rows: {manifest['rows_in']} in, {manifest['rows_out']} out")


def score_files_locally(files: list[str], options, classifier, text_column: str, pair_column: str | None,
                        output_format: str) -> dict:
    """Score `files` in this process into the shard directory `options.output`; returns the manifest."""
    filesystem, path = prepare_output_directory(options.output, options.overwrite, options.resume)
    fingerprint = directory_fingerprint(files, options, classifier, text_column, pair_column, output_format)
    progress_path = posixpath.join(path, PROGRESS_NAME)
    state = {"fingerprint": fingerprint, "rows_done": {}, "shards": []}
    if options.resume and filesystem.exists(progress_path):
        with filesystem.open(progress_path, "rb") as handle:
            earlier = json.loads(handle.read())
        check_same_run(options.output, earlier, fingerprint)
        state = earlier
    elif options.resume:
        logger.warning("nothing to resume in %s: starting from the beginning", options.output)
    # A finished file is marked -1 in rows_done; its row count is in rows_in.
    resumed = sum(state["rows_in"][index] if done == -1 else done for index, done in state["rows_done"].items())
    started = time.perf_counter()
    progress = Progress(None, "scoring", unit="row", initial=resumed, enabled=options.show_progress)
    rows_in = {}
    try:
        for index, source in enumerate(files):
            done = state["rows_done"].get(str(index), 0)
            if done == -1:  # the whole file was finished before the interruption
                rows_in[index] = state["rows_in"][str(index)]
                continue
            count = done
            for table in read_file_tables(source, index, options.input_format, options.encoding, text_column,
                                          pair_column, options.chunk_size, skip_rows=done):
                scored = score_table(classifier, table, text_column, pair_column, batch_size=options.batch_size,
                                     truncate=options.truncate, all_scores=options.all_scores,
                                     max_text_chars=options.max_text_chars, long_text=options.long_text)
                shard = write_shard(scored, filesystem, path, output_format)
                count += table.num_rows
                state["shards"] = [s for s in state["shards"] if s["shard"] != shard["shard"]] + [shard]
                state["rows_done"][str(index)] = count
                write_json_atomically(filesystem, path, PROGRESS_NAME, state)
                progress.update(table.num_rows, errors=sum(s["errors"] for s in state["shards"]))
            rows_in[index] = count
            state["rows_done"][str(index)] = -1
            state.setdefault("rows_in", {})[str(index)] = count
            write_json_atomically(filesystem, path, PROGRESS_NAME, state)
    except OSError as err:
        if not is_storage_full(err):
            raise
        raise storage_full_error(err, options.output, left="the shards written so far are kept: run again with "
                                 "--resume once there is space") from None
    finally:
        progress.close()
    manifest = build_manifest(
        "local", files, rows_in, state["shards"], classifier.info(), options.export_dir, output_format,
        time.perf_counter() - started, resumed_rows=resumed, threads=classifier.info()["intra_op_threads"],
    )
    check_complete(manifest)
    write_json_atomically(filesystem, path, MANIFEST_NAME, manifest)
    filesystem.rm(progress_path)
    return manifest
