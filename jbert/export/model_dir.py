"""The model directory an export starts from: checked to be a sequence classifier, its settings read.

Also guards the export path (an --overwrite must never delete the model it exports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jbert.core.artifacts import SETTINGS_FILE, JbertSettings
from jbert.core.errors import UserError
from jbert.tokenization.tokenizer_dir import NO_LENGTH_LIMIT, known_length_limit

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# The families tested end to end (tests/test_encoders*.py); Optimum exports a few more BERT-like types.
EXPORT_FAMILIES = ("bert", "electra", "roberta", "xlm-roberta", "deberta-v2", "modernbert")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")


@dataclass
class ModelDirInfo:
    model_dir: Path
    config: Any  # transformers.PretrainedConfig
    settings: JbertSettings
    problem_type: str
    labels: list[str]
    has_settings: bool


def check_export_path(model_dir: Path, export_dir: Path) -> None:
    """--overwrite must never delete the model it exports; a file in the way is the user's to move."""
    model_abs = model_dir.resolve()
    export_abs = export_dir.resolve()
    if export_abs == model_abs or export_abs in model_abs.parents:
        raise UserError(f"export directory {export_dir} is (or contains) the model directory {model_dir}; choose another path")
    for ancestor in export_dir.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"cannot create export directory {export_dir}: {ancestor} is a file; choose another path")
            break


def inspect_model_dir(model_dir: Path) -> ModelDirInfo:
    """Check MODEL_DIR is a sequence classifier with weights and tokenizer; read its settings."""
    if not model_dir.exists():
        raise UserError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a model directory; give the directory written by train.py")
    if not (model_dir / "config.json").is_file():
        raise UserError(
            f"{model_dir} is not a model directory (no config.json); give the output directory of "
            "train.py or a Hugging Face sequence-classification directory saved with save_pretrained"
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{model_dir}/config.json cannot be read as a transformers config: {err}") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        found = ", ".join(architectures) or "no architecture"
        raise UserError(
            f"{model_dir} holds {found}, not a sequence classifier; fine-tune it with train.py first "
            "(export needs a model with a classification head)"
        )
    check_exportable(model_dir, config, architectures)
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{model_dir} has no weights (expected model.safetensors); was the training run completed?")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"{model_dir} has no tokenizer files (tokenizer_config.json, vocab.txt or tokenizer.json); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(MODEL_DIR)"
        )
    has_settings = (model_dir / SETTINGS_FILE).is_file()
    settings = JbertSettings.load(model_dir)
    if has_settings:
        problem_type = settings.problem_type
    else:
        # A plain Hugging Face directory: its config is the only statement of the task.
        problem_type = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")
        settings.problem_type = problem_type
    if config.problem_type and config.problem_type != problem_type:
        raise UserError(
            f"{model_dir}: {SETTINGS_FILE} says problem_type {problem_type} but config.json says "
            f"{config.problem_type}; the directory was edited by hand, fix one of them"
        )
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    return ModelDirInfo(model_dir, config, settings, problem_type, labels, has_settings)


def check_exportable(model_dir: Path, config, architectures: list[str]) -> None:
    """UserError before anything is made when Optimum has no text-classification ONNX config for the model type."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs with the TasksManager)
    from optimum.exporters.tasks import TasksManager

    from jbert.export.options import ONNX_TASK

    model_type = getattr(config, "model_type", None)
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers")
    except KeyError:
        tasks = {}
    if ONNX_TASK not in tasks:
        raise UserError(
            f"{model_dir} holds a {model_type} model ({', '.join(architectures)}), which cannot be exported to ONNX: "
            f"Optimum {_version('optimum')} has no {ONNX_TASK} ONNX config for {model_type}. jbert exports and checks "
            f"{', '.join(EXPORT_FAMILIES)} (docs/encoders.md); fine-tune one of those, or serve this model with PyTorch"
        )
    from jbert.serve.runtime.session import FEEDABLE_INPUTS

    try:  # the inputs the graph will take, from the same ONNX config Optimum exports with
        constructor = TasksManager.get_exporter_config_constructor(exporter="onnx", model_type=model_type, task=ONNX_TASK,
                                                                   library_name="transformers")
        inputs = list(constructor(config).inputs)
    except (KeyError, ValueError, TypeError, AttributeError):
        return  # the export itself will say what is wrong
    unknown = [name for name in inputs if name not in FEEDABLE_INPUTS]
    if unknown:
        raise UserError(
            f"{model_dir} holds a {model_type} model whose ONNX graph would take {unknown}, which jbert's runtime "
            f"does not build (it builds {list(FEEDABLE_INPUTS)}); jbert exports and checks {', '.join(EXPORT_FAMILIES)}"
        )


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def resolve_max_length(info: ModelDirInfo, tokenizer) -> None:
    """Training's max_length from jbert.json; a plain directory gets the longest the model takes."""
    from jbert.train.positions import position_limit

    # RoBERTa-style models hold 2 fewer tokens than max_position_embeddings (jbert.train.positions).
    positions = position_limit(info.config) or NO_LENGTH_LIMIT
    if info.has_settings:
        if info.settings.max_length > positions:
            raise UserError(
                f"{info.model_dir}/{SETTINGS_FILE} sets max_length {info.settings.max_length} but the "
                f"{getattr(info.config, 'model_type', '')} model has only {positions} positions; fix max_length in {SETTINGS_FILE}"
            )
        return
    tokenizer_limit = known_length_limit(tokenizer.model_max_length) or NO_LENGTH_LIMIT
    info.settings.max_length = int(min(positions, tokenizer_limit, 512))


def load_model_tokenizer(directory: Path):
    """Load a tokenizer the way training did; a missing MeCab dictionary becomes a UserError."""
    from jbert.tokenization import load_tokenizer

    try:
        return load_tokenizer(str(directory))
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        raise UserError(f"cannot load the tokenizer of {directory}: {err}") from None

