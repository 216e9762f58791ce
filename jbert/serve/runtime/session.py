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
