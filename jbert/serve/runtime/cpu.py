"""Which int8 instruction sets this CPU has: the target an int8 export is made for, and the check at serving.

int8 kernels are only fast where the CPU has the instructions onnxruntime's int8 GEMMs use:
VNNI (one instruction for u8 x s8 -> s32 dot products), else AVX-512 or AVX2 (slower, and u8 x s8
products can saturate, hence 7-bit weights there), or ARM's NEON dot products. An int8 model made
for VNNI still runs on an AVX2-only CPU, but slower than expected and possibly with different
rounding, so serving warns.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Optional

logger = logging.getLogger("jbert.serve")

# Target name (Optimum's AutoQuantizationConfig preset) -> CPU flags of /proc/cpuinfo it relies on;
# any one flag of the set is enough (avx_vnni is the 256-bit VNNI of client CPUs).
TARGET_FLAGS = {
    "avx512_vnni": {"avx512_vnni", "avx_vnni"},
    "avx512": {"avx512bw"},
    "avx2": {"avx2"},
}
ARM_MACHINES = ("aarch64", "arm64")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def detect_cpu_target(flags: Optional[set[str]] = None, machine: Optional[str] = None) -> Optional[str]:
    """The best int8 target this CPU supports: avx512_vnni, avx512, avx2 or arm64; None if none fits."""
    machine = (machine or platform.machine()).lower()
    if machine in ARM_MACHINES:
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    for target in ("avx512_vnni", "avx512", "avx2"):
        if flags & TARGET_FLAGS[target]:
            return target
    return None


def cpu_description(flags: Optional[set[str]] = None, machine: Optional[str] = None) -> dict:
    """What the manifest records about the machine an int8 model was made and measured on."""
    flags = cpu_flags() if flags is None else flags
    machine = machine or platform.machine()
    relevant = sorted(flags & set().union(*TARGET_FLAGS.values(), {"avx512f"}))
    return {"machine": machine, "processor": platform.processor() or machine, "int8_flags": relevant,
            "detected_target": detect_cpu_target(flags, machine)}


def missing_instructions(target: Optional[str], flags: Optional[set[str]] = None, machine: Optional[str] = None) -> Optional[str]:
    """Why this CPU lacks what an int8 model made for TARGET relies on, or None when it has it."""
    if not target:
        return None
    machine = (machine or platform.machine()).lower()
    if target == "arm64":
        return None if machine in ARM_MACHINES else f"it was made for ARM (arm64) and this machine is {machine}"
    if machine in ARM_MACHINES:
        return f"it was made for x86 {target} and this machine is {machine}"
    needed = TARGET_FLAGS.get(target)
    if needed is None:
        return None
    flags = cpu_flags() if flags is None else flags
    if flags and not flags & needed:
        return f"it was made for {target} and this CPU lacks {' / '.join(sorted(needed))}"
    return None


def warn_if_cpu_lacks_int8_target(model_entry, model_path: Path) -> Optional[str]:
    """Log a warning when an int8 model is served on a CPU without the instructions it was made for.

    `model_entry` is the manifest's ManifestModelFile being loaded; returns the warning (or None).
    """
    quantization = getattr(model_entry, "quantization", None) or {}
    if getattr(model_entry, "precision", None) != "int8":
        return None
    problem = missing_instructions(quantization.get("target"))
    if problem is None:
        return None
    message = (f"{model_path.name} is int8 and {problem}: it will run, but slower than measured at export "
               "(and its figures were not checked here); re-export on this machine or serve the fp32 file (--model fp32)")
    logger.warning(message)
    return message
