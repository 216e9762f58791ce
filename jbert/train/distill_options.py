"""The distillation options checked with all the others (TrainConfig.validate): what, where, how to fix.

Only what can be told from the options and the file system; a teacher whose labels or problem type
differ from the data is found when the data is read (jbert.train.distill_teacher).
"""

from __future__ import annotations

import math
import os


def teacher_paths(value: str | None) -> list[str]:
    """The teacher directories of --teacher: one, or several separated by commas (an ensemble)."""
    if not value:
        return []
    return [part.strip() for part in str(value).split(",") if part.strip()]


# The intermediate-layer loss weights (jbert.train.distill_intermediate), each 0 = off.
WEIGHT_OPTIONS = ("distill_hidden_weight", "distill_attention_weight")


def parse_student_layers(value: str) -> list[int]:
    """--student_layers "0,2,4" -> [0, 2, 4]; ValueError when it is not a list of distinct layer numbers."""
    layers = [int(part) for part in str(value).split(",") if part.strip()]
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
        raise ValueError(value)
    return layers


def distill_problems(config) -> list[str]:
    """Every problem with the distillation options of `config` (a TrainConfig), as messages."""
    problems: list[str] = []
    if config.task != "distill":
        for name in ("teacher", "student_layers", "unlabeled_file", *WEIGHT_OPTIONS):
            if getattr(config, name):
                problems.append(f"--{name} applies to --task distill only (got --task {config.task})")
        return problems
    paths = teacher_paths(config.teacher)
    if not paths:
        problems.append("--task distill needs --teacher DIR (a model or export directory; several separated by commas)")
    for path in paths:
        if not os.path.isdir(path):
            problems.append(f"--teacher {path} is not a directory; give a model directory (train.py's output) "
                            "or an export directory (export.py's output)")
    if math.isfinite(config.distill_temperature) and config.distill_temperature <= 0:
        problems.append(f"--distill_temperature must be positive (got {config.distill_temperature})")
    if math.isfinite(config.distill_alpha) and not 0 <= config.distill_alpha <= 1:
        problems.append(f"--distill_alpha must be in [0, 1] (got {config.distill_alpha})")
    if config.student_layers:
        try:
            parse_student_layers(config.student_layers)
        except ValueError:
            problems.append(f"--student_layers must be distinct layer numbers separated by commas, e.g. 0,2,4 "
                            f"(got {config.student_layers!r})")
        if config.model_name_or_path or config.from_scratch:
            problems.append("--student_layers builds the student from the teacher's layers; drop "
                            "--model_name_or_path / --from_scratch, or --student_layers")
    for name in WEIGHT_OPTIONS:
        if math.isfinite(getattr(config, name)) and getattr(config, name) < 0:
            problems.append(f"--{name} must be 0 (off) or more (got {getattr(config, name)})")
    if config.unlabeled_file and not os.path.isfile(config.unlabeled_file):
        problems.append(f"--unlabeled_file {config.unlabeled_file} does not exist or is not a file")
    if config.hp_search:
        problems.append("--hp_search tunes classification and regression runs, not --task distill")
    return problems
