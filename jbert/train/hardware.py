"""How close a training run came to what the hardware can do: tokens/s, padding, TFLOP/s and MFU.

    TokenCounter        counts real (attention-mask) and padded tokens of every training batch,
                        on the device, without a host sync per step
    matmul_parameters   the parameters that take part in matrix multiplies (the "N" of 6 x N)
    peak_flops          a device's dense peak: a datasheet table for common GPUs, a short measured
                        matmul on CPU (cached per process), None where unknown
    utilisation         the figures metrics.json, the log and the model card report

Model FLOPs follow the PaLM paper's accounting (Chowdhery et al. 2022, appendix B): a training token
costs 6 x N (forward 2N, backward 4N) plus, per layer, 12 x hidden x its sequence's length for the
attention scores and the weighted sum. Only real tokens count: the work spent on padding is waste,
which `padding_share` shows. MFU = achieved model FLOP/s / (peak of one device x processes).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Optional

import torch

logger = logging.getLogger("jbert")

# Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, TFLOP/s per GPU:
# (name fragment, bf16/fp16, tf32, fp32 without tensor cores). The first fragment found in
# torch.cuda.get_device_name() wins, so more specific names come first.
GPU_PEAK_TFLOPS: list[tuple[str, float, float, float]] = [
    ("H200", 989.4, 494.7, 66.9),
    ("H100 PCIe", 756.0, 378.0, 51.2),
    ("H100 NVL", 835.0, 417.5, 60.0),
    ("H100", 989.4, 494.7, 66.9),  # SXM
    ("GH200", 989.4, 494.7, 66.9),
    ("A100", 312.0, 156.0, 19.5),
    ("L40S", 362.0, 183.0, 91.6),
    ("L4", 121.0, 60.0, 30.3),
    ("A10G", 70.0, 35.0, 31.2),
    ("A10", 125.0, 62.5, 31.2),
    ("RTX 4090", 165.2, 82.6, 82.6),
    ("V100", 125.0, 15.7, 15.7),  # fp16 tensor cores; no bf16 (autocast bf16 is emulated there)
    ("T4", 65.0, 8.1, 8.1),  # fp16 tensor cores; no bf16
]

COMPUTE_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.bfloat16}


def gpu_peak_tflops(device_name: str, dtype: torch.dtype, tf32: bool) -> Optional[float]:
    """The datasheet's dense peak of a GPU named `device_name` for matmuls in `dtype`; None if not in the table."""
    for fragment, half, tf32_peak, fp32 in GPU_PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            if dtype in (torch.bfloat16, torch.float16):
                return half
            return tf32_peak if tf32 else fp32
    return None


@functools.lru_cache(maxsize=None)
def measured_cpu_peak_tflops(dtype: torch.dtype = torch.float32, threads: int = 0, seconds: float = 0.25) -> float:
    """The best TFLOP/s of square matmuls in `dtype` with this process's threads over about `seconds`.

    Measured rather than looked up: a CPU's peak depends on its vector units (AVX2, AVX-512, AMX),
    the clock and the threads this process may use. Cached per process, so a run pays it once. On a
    busy machine the figure is low, so the MFU derived from it errs upwards; `threads` is only part
    of the cache key (0: the current torch thread count).
    """
    size = 512
    left, right = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.matmul(left, right)  # warm-up: oneDNN picks and JIT-compiles its kernel on the first call
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        torch.matmul(left, right)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e12


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[Optional[float], str, str]:
    """(peak TFLOP/s of one device for `dtype` or None, where the figure comes from, the device's name)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak_tflops(name, dtype, torch.backends.cuda.matmul.allow_tf32)
        return peak, ("datasheet, dense" if peak is not None else "not in jbert.train.hardware.GPU_PEAK_TFLOPS"), name
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return (measured_cpu_peak_tflops(dtype, threads),
                f"measured: best {str(dtype).removeprefix('torch.')} 512x512 matmul, {threads} thread(s)", cpu_name())
    return None, f"no peak known for device type {device.type}", device.type


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters used in matrix multiplies: all but embedding tables, plus a tied output projection.

    An embedding lookup costs no FLOPs, but a masked-LM head that shares the word embeddings does
    multiply by them. Under DeepSpeed ZeRO-3 a parameter's full size is in `ds_numel`.
    """
    size = lambda parameter: int(getattr(parameter, "ds_numel", 0) or parameter.numel())  # noqa: E731
    embedded = {id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding)
                for p in module.parameters(recurse=False)}
    total = sum(size(p) for p in model.parameters() if id(p) not in embedded)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and id(output.weight) in embedded:
        total += size(output.weight)  # tied: model.parameters() listed it once, as an embedding
    return total


def attention_shape(model_config) -> tuple[int, int]:
    """(layers, hidden size) of an encoder config, 0s when the names are not BERT's or DistilBERT's."""
    layers = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layers", 0)
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "dim", 0)
    return int(layers or 0), int(hidden or 0)


class TokenCounter:
    """Real and padded tokens of the training batches this process saw, summed on the device.

    `add` queues two small reductions per batch and never calls `.item()`: on a GPU the loop keeps
    running ahead of the device. `totals` syncs once, at the end.
    """

    def __init__(self, device: torch.device):
        self.padded = 0  # known on the host: the batch's shape
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # real tokens, sum of squared lengths

    def add(self, batch: dict) -> None:
        """Count one micro-batch (its attention mask; all positions are real without one)."""
        input_ids = batch["input_ids"]
        self.padded += input_ids.numel()
        mask = batch.get("attention_mask")
        lengths = (mask.sum(dim=-1) if mask is not None else
                   torch.full(input_ids.shape[:1], input_ids.shape[-1], device=input_ids.device)).double()
        self.sums += torch.stack((lengths.sum(), (lengths * lengths).sum()))

    def totals(self) -> tuple[int, int, float]:
        """(real tokens, padded tokens, sum of squared sequence lengths) of this process."""
        real, squares = self.sums.tolist()
        return int(real), self.padded, squares


def training_flops(parameters: int, layers: int, hidden: int, tokens: float, squared_lengths: float) -> float:
    """Model FLOPs of training on `tokens` real tokens: 6 N per token plus 12 x layers x hidden x length^2 per sequence."""
    return 6.0 * parameters * tokens + 12.0 * layers * hidden * squared_lengths


def utilisation(model: torch.nn.Module, counter: TokenCounter, seconds: float, world: int,
                device: torch.device, mixed_precision: str) -> dict:
    """The hardware figures of a run: tokens/s, padding share, achieved TFLOP/s, peak and MFU.

    Counts are this process's times `world` (every process sees batches of the same shape
    statistics), the same way the loop counts samples: no collective at the end of training.
    """
    real, padded, squares = counter.totals()
    real, padded, squares = real * world, padded * world, squares * world
    seconds = max(seconds, 1e-9)
    parameters = matmul_parameters(model)
    layers, hidden = attention_shape(getattr(model, "config", None))
    achieved = training_flops(parameters, layers, hidden, real, squares) / seconds / 1e12
    dtype = COMPUTE_DTYPES.get(mixed_precision, torch.float32)
    peak, source, name = peak_flops(device, dtype)
    figures = {
        "train_tokens_per_second": round(real / seconds, 1),
        "train_padded_tokens_per_second": round(padded / seconds, 1),
        "padding_share": round(1 - real / padded, 4) if padded else 0.0,
        "matmul_parameters": parameters,
        "achieved_tflops_per_second": _significant(achieved),
        "device": name, "processes": world, "compute_dtype": str(dtype).removeprefix("torch."),
        "peak_tflops_per_second_per_device": None if peak is None else _significant(peak),
        "peak_source": source,
        "mfu": None if not peak else _significant(achieved / (peak * world)),
    }
    return figures


def _significant(value: float, digits: int = 4) -> float:
    # Figures span 1e-4 (a tiny model on one CPU thread) to 1e3 TFLOP/s: round to significant digits.
    return float(f"{value:.{digits}g}")


def log_line(figures: dict) -> str:
    """One line for the training log."""
    mfu = "unknown (no peak for this device)" if figures["mfu"] is None else f"{figures['mfu']:.1%}"
    return (f"hardware: {figures['train_tokens_per_second']:,.0f} real tokens/s, padding {figures['padding_share']:.1%}, "
            f"{figures['achieved_tflops_per_second']:.3g} TFLOP/s achieved ({figures['compute_dtype']}), MFU {mfu} "
            f"of {figures['device']} ({figures['peak_source']})")


def card_lines(figures: Optional[dict]) -> list[str]:
    """The model card's "Hardware utilisation" section (markdown lines); none without figures."""
    if not figures:
        return []
    peak = figures["peak_tflops_per_second_per_device"]
    rows = [
        ("device", f"{figures['device']} x {figures['processes']} process(es), {figures['compute_dtype']} compute"),
        ("real tokens / s", f"{figures['train_tokens_per_second']:,.0f}"),
        ("padding share of the batches", f"{figures['padding_share']:.1%}"),
        ("achieved model TFLOP/s", f"{figures['achieved_tflops_per_second']:.4g}"),
        ("peak TFLOP/s per device", "unknown" if peak is None else f"{peak:.4g} ({figures['peak_source']})"),
        ("MFU", "unknown" if figures["mfu"] is None else f"{figures['mfu']:.1%}"),
    ]
    return ["", "## Hardware utilisation", "",
            "Model FLOPs: 6 x matmul parameters per real token plus attention (PaLM's accounting); "
            "MFU = achieved / (peak x processes).", "", "| figure | value |", "| --- | --- |"] + \
        [f"| {key} | {value} |" for key, value in rows]
