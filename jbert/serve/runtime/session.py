"""ONNX Runtime sessions as this project runs them: thread counts, executor, graph optimisation, loading.

Why these settings: the session uses one intra-op thread per physical core (hyper-threads only
add contention to GEMMs) and sequential execution (a BERT graph is one chain; the parallel
executor adds scheduling overhead). Several sessions in one machine (Ray workers, HTTP replicas)
split the cores between them instead: `threads_per_worker` says how many each gets.
"""

from __future__ import annotations

import os
from pathlib import Path

from jbert.core.errors import UserError

REQUIRED_INPUTS = ("input_ids", "attention_mask")
# Every input the runtime knows how to build (`batch_inputs.TextEncoder.pad`).
FEEDABLE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def physical_core_count() -> int:
    """Number of physical CPU cores this process may use (hyper-threads not counted).

    Reads the Linux CPU topology for the CPUs in this process's affinity mask; elsewhere falls
    back to psutil when installed, else to the logical CPU count.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # macOS / Windows
        allowed = None
    if allowed is not None:
        cores = set()
        for cpu in allowed:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            try:
                package = (topology / "physical_package_id").read_text().strip()
                core = (topology / "core_id").read_text().strip()
            except OSError:
                cores = set()
                break
            cores.add((package, core))
        if cores:
            return len(cores)
        return max(1, len(allowed))
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Intra-op threads for each of `workers` sessions sharing `cores` cores, never oversubscribing.

    `cores` defaults to this machine's physical cores; at least one thread each, so more workers
    than cores run one thread each (the user asked for that many).
    """
    if workers < 1:
        raise UserError(f"the number of workers must be at least 1, got {workers}")
    return max(1, (cores or physical_core_count()) // workers)


def make_session_options(num_threads: int | None = None, graph_optimization: str = "all", allow_spinning: bool = True):
    """onnxruntime SessionOptions as this project runs them (threads, executor, graph optimisation).

    `num_threads`: intra-op threads; None means one per physical core.
    `graph_optimization`: "disable", "basic", "extended" or "all".
    `allow_spinning`: let idle intra-op threads busy-wait for the next op. Good for back-to-back
    batches; a server on few cores turns it off so the waiting threads leave CPU to the event
    loop and the tokenizer thread.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if graph_optimization not in levels:
        raise UserError(f"graph_optimization must be one of {sorted(levels)}, got {graph_optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or physical_core_count()
    # One chain of ops: a second inter-op pool would only compete with the intra-op threads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[graph_optimization]
    options.log_severity_level = 3  # warnings about unused initializers are noise for users
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


def open_session(model_path: Path, num_threads: int | None = None, graph_optimization: str = "all",
                 allow_spinning: bool = True):
    """A CPU InferenceSession for `model_path`; a file onnxruntime cannot load is a UserError."""
    import onnxruntime as ort

    if num_threads is not None and num_threads < 1:
        raise UserError(f"num_threads must be at least 1, got {num_threads}")
    options = make_session_options(num_threads, graph_optimization, allow_spinning)
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise UserError(f"{model_path} cannot be loaded by onnxruntime ({err}); re-export the model") from None


def session_io_names(session, model_path: Path) -> tuple[set[str], str]:
    """(the model's input names, the output to read: "logits" or the first one); checks required inputs."""
    input_names = {item.name for item in session.get_inputs()}
    missing = set(REQUIRED_INPUTS) - input_names
    if missing:
        raise UserError(f"{model_path}: the ONNX model lacks inputs {sorted(missing)}; re-export it with export.py")
    outputs = [item.name for item in session.get_outputs()]
    return input_names, "logits" if "logits" in outputs else outputs[0]


def check_session_matches_export(session, model_path: Path, output_name: str, labels: list[str],
                                 manifest_inputs: list[str] | None) -> None:
    """UserError unless the ONNX model fits its export: its inputs are the manifest's, one output per label.

    A model file swapped into an export (with the manifest's hash recomputed) would otherwise serve
    another model's classes under these label names, or fail with an IndexError on the first
    request. `manifest_inputs`: the input names export.py checked the model with (None for exports
    that did not record them: then only inputs the runtime can build are accepted).
    """
    import numpy as np

    problems = []
    graph_inputs = sorted(item.name for item in session.get_inputs())
    if manifest_inputs and set(graph_inputs) != set(manifest_inputs):
        problems.append(f"the model's inputs {graph_inputs} differ from the manifest's {sorted(manifest_inputs)}")
    unknown = sorted(set(graph_inputs) - set(FEEDABLE_INPUTS))
    if unknown:
        problems.append(f"the model takes inputs {unknown} that jbert does not build (it builds {list(FEEDABLE_INPUTS)})")
    expected = max(1, len(labels))  # regression: one output, named by its one label (if any)
    if not problems:
        output = next(item for item in session.get_outputs() if item.name == output_name)
        width = output.shape[-1] if output.shape else None
        if not isinstance(width, int):
            # A symbolic width is only known by running the model: one tiny batch of padding ids.
            feeds = {name: np.zeros((1, 2), dtype=np.int64) for name in graph_inputs}
            feeds["attention_mask"] = np.ones((1, 2), dtype=np.int64)
            result = session.run([output_name], feeds)[0]
            width = int(result.shape[-1]) if result.ndim == 2 else None
            if width is None:
                problems.append(f"its output {output_name!r} has shape {list(result.shape)}, not (batch, labels)")
        if width is not None and width != expected:
            problems.append(f"its output {output_name!r} has {width} values per input but the export names "
                            f"{len(labels)} labels {labels[:10]}{' ...' if len(labels) > 10 else ''}")
    if problems:
        raise UserError(f"{model_path} does not match its export directory: " + "; ".join(problems)
                        + ". The model file was replaced or the export is incomplete: re-export the model with export.py")
