"""Step 1 of an export: the fp32 ONNX graph with Optimum's exporter, plus the files serving needs beside it.

The tokenizer is saved explicitly and reloaded (Optimum swallows tokenizer save errors), and
jbert.json travels with the graph so serving repeats training's text handling exactly.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Optional, Sequence

from jbert.core.artifacts import EXAMPLES_FILE, SETTINGS_FILE
from jbert.core.errors import UserError, ValidationError
from jbert.export.model_dir import ModelDirInfo, load_model_tokenizer
from jbert.export.options import FP32_FILE, ONNX_TASK
from jbert.export.texts import ValidationExample, encode


def export_fp32(model_dir: Path, work_dir: Path, opset: Optional[int]) -> None:
    """Write model.onnx (+ config.json) with Optimum's exporter; our own checks come later."""
    from optimum.exporters.onnx import main_export

    with warnings.catch_warnings():
        # The tracer warns about constants in the attention-mask helper; they are shape-free.
        warnings.filterwarnings("ignore", category=Warning, module=r"torch\.jit.*|transformers\..*")
        try:
            main_export(
                str(model_dir),
                output=str(work_dir),
                task=ONNX_TASK,
                opset=opset,
                device="cpu",
                do_validation=False,  # Optimum's check only warns; check_parity fails loudly
                local_files_only=True,
                trust_remote_code=False,
                library_name="transformers",
            )
        except (ValueError, KeyError, NotImplementedError) as err:
            raise UserError(f"Optimum cannot export {model_dir} to ONNX: {err}") from None
    if not (work_dir / FP32_FILE).is_file():
        raise RuntimeError(f"Optimum's main_export finished without writing {FP32_FILE}")


def save_tokenizer_checked(tokenizer, work_dir: Path, examples: Sequence[ValidationExample], max_length: int) -> None:
    """Save the tokenizer ourselves and prove the saved files reload and tokenize identically."""
    tokenizer.save_pretrained(str(work_dir))
    try:
        reloaded = load_model_tokenizer(work_dir)
    except UserError as err:
        raise ValidationError(f"the tokenizer saved into the export directory does not reload: {err}") from None
    original = encode(tokenizer, examples, max_length, padding=False)
    again = encode(reloaded, examples, max_length, padding=False)
    for name in ("input_ids", "token_type_ids"):
        if original[name] != again[name]:
            raise ValidationError(
                f"the tokenizer saved into the export directory gives different {name} than the "
                f"model's own tokenizer ({type(tokenizer).__name__} -> {type(reloaded).__name__}); "
                "its files were not saved completely"
            )


def copy_settings(model_dir: Path, work_dir: Path, info: ModelDirInfo) -> None:
    """jbert.json (and the example texts) travel with the graph so serving repeats training exactly."""
    if (model_dir / SETTINGS_FILE).is_file():
        shutil.copy2(model_dir / SETTINGS_FILE, work_dir / SETTINGS_FILE)
    else:
        info.settings.save(work_dir)
    if (model_dir / EXAMPLES_FILE).is_file():
        shutil.copy2(model_dir / EXAMPLES_FILE, work_dir / EXAMPLES_FILE)


def move_model_file(scratch_dir: Path, name: str, work_dir: Path) -> None:
    """Move an ONNX file (and external-data files named after it) out of a scratch directory."""
    for path in scratch_dir.iterdir():
        if path.name == name or path.name.startswith(name + "_data") or path.name.startswith(name + ".data"):
            os.replace(path, work_dir / path.name)
    shutil.rmtree(scratch_dir, ignore_errors=True)
    if not (work_dir / name).is_file():
        raise RuntimeError(f"onnxruntime tooling finished without writing {name}")


