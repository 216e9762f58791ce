"""Batch scoring on Ray Data: the same rows, labels and scores as the local scorer, on a cluster.

    python serve_onnx.py score EXPORT_DIR 'reviews/*.parquet' scored/ --engine ray            # local Ray
    python serve_onnx.py score EXPORT_DIR s3://bucket/day=2026-11-24/ scored/ --engine ray --address auto

    # inside your own Ray pipeline:
    from jbert.serve.scoring.ray_engine import score_dataset
    scored = score_dataset(ray.data.read_parquet("s3://bucket/reviews/"), "/models/export", num_workers=8)

The pipeline: one read task per input file (the local scorer's tolerant readers, so a bad row
becomes an error row here too; a file's rows travel as one Ray block, so files are the unit of
parallelism) -> an actor pool where each actor opens the ONNX session and the
tokenizer once and scores Arrow batches (`jbert.serve.scoring.tables`, the code the local engine
runs) -> write tasks that put each batch into a shard named by its first row. Block order is
preserved, and every shard carries `source_file` / `source_row`, so input order is recoverable.

Faults: Ray Data restarts a dead scoring actor and retries its batches (actor pool defaults:
max_restarts=-1, max_task_retries=-1); the output of a failed attempt is dropped, and a retried
write replaces its own shard (same name), so every row is written exactly once; the manifest
checks rows in == rows out. What a user sees when a worker dies: the raylet's warning "A worker
died or was killed while executing a task by an unexpected system error ... Worker exit type:
SYSTEM_ERROR", then the run goes on and finishes normally. Threads: each actor asks Ray for as many CPUs as it runs onnxruntime
threads, so workers x threads never exceeds a node's CPUs. Ray is imported lazily: the serving
install without ray keeps working for the local engine.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from jbert.core.errors import UserError
from jbert.core.progress import Progress
from jbert.core.export_dir import ExportDir
from jbert.serve.runtime.batch_inputs import DEFAULT_MAX_TEXT_CHARS
from jbert.serve.runtime.session import physical_core_count
from jbert.serve.scoring.shards import (
    MANIFEST_NAME, build_manifest, check_complete, prepare_output_directory, write_json_atomically,
)
from jbert.serve.scoring.tables import read_file_tables, score_table, write_shard

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'pip install "ray[data]==2.60.0" (see requirements-serve.txt)'


def import_ray():
    """The ray module, or a UserError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(f"--engine ray needs Ray Data: {RAY_INSTALL_HINT}") from None
    return ray


class ScoreBatches:
    """Ray Data actor: opens the ONNX session and tokenizer once, then scores Arrow batches."""

    def __init__(self, export_dir: str, model: str = "default", num_threads: int = 1, text_column: str | None = None,
                 text_pair_column: str | None = None, batch_size: int = 32, truncate: bool = True,
                 all_scores: bool = False, chunk_size: int | None = None,
                 max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, long_text: str = "error"):
        """Load the export (on the worker, which opens it again there: the path must exist on every node)."""
        from jbert.serve.runtime.classifier import OnnxClassifier

        self.classifier = OnnxClassifier.from_export_dir(export_dir, model=model, num_threads=num_threads)
        self.text_column, self.pair_column = self.classifier.export_dir.text_columns(text_column, text_pair_column)
        self.options = {"batch_size": batch_size, "truncate": truncate, "all_scores": all_scores, "chunk_size": chunk_size,
                        "max_text_chars": max_text_chars, "long_text": long_text}

    def __call__(self, table):
        """The batch with predicted_label, predicted_score, ... and error added (one row out per row in)."""
        return score_table(self.classifier, table, self.text_column, self.pair_column, **self.options)


def score_dataset(dataset, export_dir: str, *, model: str = "default", text_column: str | None = None,
                  text_pair_column: str | None = None, num_workers: int | None = None, num_threads: int = 1,
                  batch_size: int = 32, rows_per_batch: int | None = 4096, all_scores: bool = False,
                  truncate: bool = True, chunk_size: int | None = None,
                  max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, long_text: str = "error"):
    """A Ray Dataset with the prediction columns added to every row of `dataset` (lazy, like any map).

    `export_dir` must exist at the same path on every worker node (shared storage or copied).
    `text_column` / `text_pair_column`: default to the columns the model was trained on.
    `num_workers`: scoring actors (default: the cluster's CPUs // `num_threads`); each runs
    `num_threads` onnxruntime threads and reserves that many CPUs. `batch_size`: texts per
    onnxruntime call; `rows_per_batch`: rows per actor call (None: one block per call; `chunk_size`:
    the reader's chunk length, scored chunk by chunk as the local scorer does). A row that cannot be scored keeps
    its place with a non-null `error`. Rows keep their columns; a row from `serve_onnx.py`'s
    readers also has `source_file` and `source_row`. `max_text_chars` / `long_text`: see
    `jbert.serve.scoring.rows.score_records`.
    """
    ray = import_ray()
    if num_threads < 1 or batch_size < 1 or (rows_per_batch is not None and rows_per_batch < 1):
        raise UserError("num_threads, batch_size and rows_per_batch must each be at least 1")
    if num_workers is None:
        num_workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // num_threads)
    return dataset.map_batches(
        ScoreBatches,
        fn_constructor_kwargs={"export_dir": str(export_dir), "model": model, "num_threads": num_threads,
                               "text_column": text_column, "text_pair_column": text_pair_column,
                               "batch_size": batch_size, "truncate": truncate, "all_scores": all_scores,
                               "chunk_size": chunk_size, "max_text_chars": max_text_chars, "long_text": long_text},
        batch_size=rows_per_batch, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=num_threads,
    )


class RowTally:
    """Rows read per input file, reported by the read tasks (set, not added: a retried read counts once)."""

    def __init__(self):
        self.rows: dict[int, int] = {}

    def record(self, file_index: int, rows: int) -> None:
        """Remember how many records file `file_index` had."""
        self.rows[file_index] = rows

    def counts(self) -> dict[int, int]:
        """Records per input file read so far."""
        return dict(self.rows)


def _read_files(batch, *, tally, input_format, encoding, text_column, pair_column, chunk_size):
    """Ray read step: the records of each listed file as Arrow tables (generator: memory stays bounded)."""
    import ray

    for index, source in zip(batch.column("file_index").to_pylist(), batch.column("source_file").to_pylist()):
        count = 0
        for table in read_file_tables(source, index, input_format, encoding, text_column, pair_column, chunk_size):
            count += table.num_rows
            yield table
        ray.get(tally.record.remote(index, count))


def _write_shards(table, *, filesystem, path, fmt):
    """Ray write step: one shard per batch; returns the shard's row counts as a one-row table."""
    import pyarrow as pa

    stats = write_shard(table, filesystem, path, fmt)
    return pa.table({key: [value] for key, value in stats.items()})


def _collect(written, show_progress: bool) -> list[dict]:
    """The shards' row counts as they are written, with progress in rows per second."""
    shards = []
    with Progress(None, "scoring on Ray", unit="row", enabled=show_progress) as progress:
        for shard in written.iter_rows():
            shards.append(dict(shard))
            progress.update(shard["rows"], errors=sum(s["errors"] for s in shards))
    return shards


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """UserError unless a TCP connection to a host:port / ray://host:port address opens ("auto" is left to Ray)."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({err.strerror or err}); start it (`ray start --head`), "
            "check the address and port, or leave out --address to run a local Ray"
        ) from None


def use_token_if_present() -> None:
    """Send the Ray auth token when one is at hand and the user has not chosen (call before importing ray).

    `ray start` (2.60) turns token authentication on and keeps the token in ~/.ray/auth_token, but
    a driver joining with ray.init(address=...) only sends it under RAY_AUTH_MODE=token (read when
    ray is imported): without it every RPC is refused and ray.init retries for a minute.
    """
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and ("RAY_AUTH_TOKEN" in os.environ or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local Ray; True when this call started it (stop it after)."""
    if address:
        use_token_if_present()
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # the workers use this interpreter as is
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise UserError(f"cannot join the Ray cluster at {address}: {err}") from None
        return True
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    return True


def describe_export(export_dir: str, model: str) -> dict:
    """The export as a node sees it: {"export": its ExportDir, "info": the model file chosen}, checked as the
    runtime would, without loading onnxruntime (fast enough to run on every node). UserError when it is
    missing or incomplete. The ExportDir travels back to the driver, which may not have the directory itself."""
    export = ExportDir.open(export_dir)
    key, model_file = export.model_file(model)
    return {"export": export, "info": {"model": key, "model_file": model_file.name}}


def _probe_export(export_dir: str, model: str) -> dict:
    """On one node: `describe_export` there, its UserError as a message."""
    where = socket.gethostname()
    try:
        return {"node": where, "error": None, **describe_export(export_dir, model)}
    except UserError as err:
        return {"node": where, "error": str(err)}


def probe_export_on_nodes(export_dir: str, model: str) -> dict:
    """Load the export once on every alive node with CPUs; UserError naming the nodes where it fails."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_export)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    answers = ray.get([
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(export_dir, model)
        for n in nodes
    ])
    failed = [a for a in answers if a["error"]]
    if failed:
        raise UserError(
            f"the export directory {export_dir} cannot be used on {len(failed)} of {len(answers)} Ray node(s) "
            f"({failed[0]['node']}: {failed[0]['error']}); every worker needs it at the same path: put it on "
            "shared storage or copy it to each node"
        )
    return answers[0]


def user_error_in(err: BaseException) -> UserError | None:
    """The UserError a Ray task raised, unwrapped from Ray's exception chain (None if there is none)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserError) and type(err).__module__.startswith("jbert"):
            return err
        cause = getattr(err, "cause", None)
        err = cause if isinstance(cause, BaseException) else (err.__cause__ or err.__context__)
    return None


def score_files_with_ray(files: list[str], options, output_format: str) -> dict:
    """Score `files` on Ray into the shard directory `options.output`; returns the manifest written."""
    threads = options.num_threads or (default_local_threads(options.num_workers) if not options.address else 1)
    started_ray = connect(options.address, num_cpus=None)
    ray = import_ray()
    try:
        started = time.perf_counter()
        # A local Ray shares this machine's files: no need to ask a worker.
        probe = (probe_export_on_nodes(options.export_dir, options.model) if options.address
                 else describe_export(options.export_dir, options.model))
        text_column, pair_column = probe["export"].text_columns(options.text_column, options.text_pair_column)
        workers = options.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        filesystem, path = prepare_output_directory(options.output, options.overwrite, resume=False)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # blocks leave in input order: shards stay sorted
        # One progress line of our own (rows written, rows/s) instead of Ray's per-operator bars.
        context.enable_progress_bars = False
        tally = ray.remote(num_cpus=0)(RowTally).remote()
        listing = ray.data.from_items([{"file_index": i, "source_file": f} for i, f in enumerate(files)],
                                      override_num_blocks=len(files))
        # Reading and writing reserve no CPU: the scoring actors hold the cores, and a read task that
        # waited for a free CPU would starve them. The task pools are capped instead.
        records = listing.map_batches(
            _read_files, batch_size=1, batch_format="pyarrow", num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=max(1, min(len(files), workers))),
            fn_kwargs={"tally": tally, "input_format": options.input_format, "encoding": options.encoding,
                       "text_column": text_column, "pair_column": pair_column, "chunk_size": options.chunk_size},
        )
        # Ray joins a read task's tables into blocks of up to 128 MiB and gives a block to one actor,
        # so files are what spreads over the workers (as with Ray's own readers). Not
        # repartition(target_num_rows_per_block=...): its tasks want a CPU that the actors hold,
        # and the run would wait forever.
        scored = score_dataset(records, options.export_dir, model=options.model, text_column=text_column,
                               text_pair_column=pair_column, num_workers=workers, num_threads=threads,
                               batch_size=options.batch_size, rows_per_batch=None, chunk_size=options.chunk_size,
                               all_scores=options.all_scores, truncate=options.truncate,
                               max_text_chars=options.max_text_chars, long_text=options.long_text)
        # One shard per block, never a batch joined across blocks: two input files may have columns of
        # different types (an id read as text from CSV, as integers from Parquet) that cannot be one table.
        written = scored.map_batches(
            _write_shards, batch_size=None, batch_format="pyarrow", num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=max(1, workers)),
            fn_kwargs={"filesystem": filesystem, "path": path, "fmt": output_format},
        )
        try:
            shards = _collect(written, options.show_progress)
        except Exception as err:  # Ray wraps a task's UserError (bad file, missing column) in its own errors
            user_error = user_error_in(err)
            if user_error is None:
                raise
            # Ray Data appends its retry advice to the message: the user's problem is what comes before.
            raise type(user_error)(str(user_error).split("\nFailed to apply UDF transform")[0]) from None
        rows_in = ray.get(tally.counts.remote())
        manifest = build_manifest(
            "ray", files, rows_in, shards, probe["info"], options.export_dir, output_format,
            time.perf_counter() - started, workers=workers, threads_per_worker=threads,
            ray_address=options.address or "local", nodes=len([n for n in ray.nodes() if n.get("Alive")]),
        )
        check_complete(manifest)
        write_json_atomically(filesystem, path, MANIFEST_NAME, manifest)
        return manifest
    finally:
        if started_ray:
            ray.shutdown()


def default_local_threads(num_workers: int | None) -> int:
    """onnxruntime threads per worker on a local Ray: the physical cores shared out between the workers."""
    return max(1, physical_core_count() // num_workers) if num_workers else 1
