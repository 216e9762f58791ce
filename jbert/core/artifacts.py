"""The contracts between stages: what a model directory and an export directory hold (torch-free).

MODEL DIR (written by training, read by export; standard `save_pretrained` layout plus extras)
    config.json            transformers config: id2label, label2id, problem_type
    model.safetensors      weights
    tokenizer files        tokenizer_config.json, vocab.txt, special_tokens_map.json ...
    jbert.json             JbertSettings: text normalisation, max_length, columns, threshold(s), min_confidence, temperature,
                           long_text (windows for texts over max_length: stride, pooling)
    training_config.yaml   the resolved TrainConfig of the run
    metrics.json           per-evaluation history and final figures
    examples.jsonl         a few validation texts (+ labels) used by export to check parity
    README.md, *.png       model card and plots (reliability.png: calibration before and after)

EXPORT DIR (written by export, read by serving through `jbert.core.export_dir.ExportDir`)
    model.onnx             fp32 export (plus model_optimized.onnx / model_quantized.onnx if asked)
    config.json, tokenizer files, jbert.json   copied from the model dir
    manifest.json          Manifest: files, default file, task, labels, parity figures, versions,
                           the int8 search, the sha256 of every other file (checked at load) and
                           the softmax temperature serving applies (None: raw softmax) and
                           the long-text rule (windows, stride, pooling; absent: truncation)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

from jbert.core.errors import UserError
from jbert.core.file_hashes import hash_directory, mismatched_files
from jbert.core.normalize import NormalizationConfig
from jbert.core.storage import is_storage_full, storage_full_error, sync_directory, sync_tree
from jbert.core.windows import LongTextRule

SETTINGS_FILE = "jbert.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
EXAMPLES_FILE = "examples.jsonl"
TRAINING_CONFIG_FILE = "training_config.yaml"
MANIFEST_FORMAT_VERSION = 1

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclass
class JbertSettings:
    """Everything besides weights and tokenizer that serving must repeat exactly as training did."""

    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    max_length: int = 128
    problem_type: str = "single_label_classification"
    text_column: str = "text"
    text_pair_column: str | None = None
    multi_label_threshold: float = 0.5
    format_version: int = 1
    # Per-label sigmoid thresholds by label name (multi-label, tuned on validation); None: the global one.
    label_thresholds: dict[str, float] | None = None
    # Single-label abstention: a top score below it is answered "abstained"; None: never abstain.
    min_confidence: float | None = None
    # Single-label softmax temperature fitted on validation (train --calibrate temperature); None: raw
    # softmax. Left out of jbert.json when None, so a run without calibration writes today's file.
    temperature: float | None = None
    # How texts longer than max_length are read (train --long_text windows); None: truncated, as
    # before windows existed (and left out of jbert.json then).
    long_text: LongTextRule | None = None

    @property
    def is_pair(self) -> bool:
        """True when the model classifies sentence pairs."""
        return self.text_pair_column is not None

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        values = asdict(self)
        values["normalization"] = self.normalization.to_dict()
        # Without a decision rule the file is as before thresholds existed (no null keys added).
        for name in ("label_thresholds", "min_confidence"):
            if values.get(name) is None:
                values.pop(name, None)
        if values["temperature"] is None:
            del values["temperature"]
        if values["long_text"] is None:
            del values["long_text"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "JbertSettings":
        """Build from a saved dict, ignoring unknown keys written by newer versions."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        kwargs["normalization"] = NormalizationConfig.from_dict(values.get("normalization"))
        _check_decision_rule(kwargs)
        kwargs["temperature"] = checked_temperature(values.get("temperature"), SETTINGS_FILE)
        if values.get("long_text") is not None:
            kwargs["long_text"] = LongTextRule.from_dict(values["long_text"], SETTINGS_FILE)
        return cls(**kwargs)

    def save(self, directory: str | os.PathLike) -> None:
        """Write `jbert.json` into a directory."""
        write_json(Path(directory) / SETTINGS_FILE, self.to_dict())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "JbertSettings":
        """Read `jbert.json`; a plain Hugging Face directory without one gets defaults."""
        path = Path(directory) / SETTINGS_FILE
        if not path.is_file():
            return cls()
        return cls.from_dict(read_json(path))


def _is_probability(value: object, upper_inclusive: bool) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value and (value <= 1 if upper_inclusive else value < 1))


def _check_decision_rule(values: dict) -> None:
    """A hand-edited jbert.json with a decision rule serving could not apply is a UserError, not a crash later."""
    min_confidence = values.get("min_confidence")
    if min_confidence is not None and not _is_probability(min_confidence, upper_inclusive=True):
        raise UserError(f"{SETTINGS_FILE}: min_confidence must be a number in (0, 1] or null, got {min_confidence!r}")
    thresholds = values.get("label_thresholds")
    if thresholds is not None and not (isinstance(thresholds, dict) and all(
            isinstance(name, str) and _is_probability(value, upper_inclusive=False) for name, value in thresholds.items())):
        raise UserError(f"{SETTINGS_FILE}: label_thresholds must map label names to numbers in (0, 1), got {thresholds!r}")


def checked_temperature(value: object, where: str) -> float | None:
    """A saved temperature as a float (None when absent); anything but a positive finite number is a UserError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise UserError(f"{where}: temperature must be a positive number, got {value!r}; "
                        "retrain with --calibrate temperature or remove the key")
    return float(value)


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file, turning a missing or corrupt file into a UserError naming it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); was it written completely?") from None


def json_temporary_path(path: str | os.PathLike) -> Path:
    """Where write_json writes PATH before renaming it (a SIGKILL between the two leaves it behind)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def write_json(path: str | os.PathLike, values: object) -> None:
    """Write JSON (UTF-8, Japanese kept readable) atomically: temp file then rename.

    A full disk raises StorageFullError and leaves the previous file (if any) in place.
    """
    path = Path(path)
    tmp_path = json_temporary_path(path)
    try:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            json.dump(values, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
        os.replace(tmp_path, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if is_storage_full(err):
            raise storage_full_error(err, path) from err
        raise


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a non-empty or unwritable output directory unless `overwrite`; return it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output directory {path} exists and is a file; choose another path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(
            f"output directory {path} is not empty; pass --overwrite to replace it or choose another path"
        )
    parent = path.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write to {probe} (permission denied); choose another output directory")
    return path


_TMP_MARK = ".tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temporaries(final_path: str | os.PathLike) -> list[Path]:
    """Remove temporary directories that atomic_directory left beside `final_path` when its process was killed.

    Only directories named for this host and a process that no longer exists are removed, so a
    writer running at the same time (or on another machine sharing the file system) is left alone.
    """
    final_path = Path(final_path).absolute()
    prefix = f".{final_path.name}{_TMP_MARK}{socket.gethostname()}-"
    removed = []
    if not final_path.parent.is_dir():
        return removed
    for candidate in final_path.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_directory(final_path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `final_path`; move it into place only on success.

    A crash or error leaves no half-written directory that looks complete: the temporary one is
    removed and any existing directory at `final_path` is untouched. A process killed outright
    (SIGKILL, power loss) cannot clean up; its temporary directory has a hidden name no stage
    reads, and the next atomic_directory for the same path removes it. A full disk or file-size
    limit becomes a StorageFullError that says so.
    """
    final_path = check_output_dir(final_path, overwrite)
    parent = final_path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final_path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_path.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}-",
                                    dir=parent))
    # mkdtemp makes the directory private (0700); the result is a normal output directory that
    # others on the machine may read, as `mkdir` would have made it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_dir, 0o777 & ~umask)
    try:
        yield tmp_dir
    except BaseException as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if is_storage_full(err):
            kept = f"{final_path} was left as it was" if final_path.exists() else f"{final_path} was not created"
            raise storage_full_error(err, final_path, left=kept) from err
        raise
    try:
        sync_tree(tmp_dir)
        if final_path.exists():
            old = final_path.with_name(f".{final_path.name}.old-{os.getpid()}")
            os.replace(final_path, old)
            os.replace(tmp_dir, final_path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_dir, final_path)
        sync_directory(parent)
    except BaseException as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if is_storage_full(err):
            raise storage_full_error(err, final_path) from err
        raise


@dataclass
class ManifestModelFile:
    """One ONNX file in an export directory."""

    file: str
    precision: str  # "fp32" | "int8"
    optimization: str | None = None  # "O1".."O4" or None
    quantization: dict | None = None  # {"target": "avx2", "per_channel": False, "reduce_range": ...}
    size_bytes: int = 0
    sha256: str = ""
    parity: dict = field(default_factory=dict)  # max_abs_diff, label_agreement, accuracy, ...


@dataclass
class Manifest:
    """`manifest.json` of an export directory: what serving loads and how far to trust it."""

    task: str  # problem_type
    labels: list[str]
    max_length: int
    is_pair: bool
    default_model: str  # key in `models`, e.g. "fp32" or "int8"
    models: dict[str, ManifestModelFile]
    source: dict = field(default_factory=dict)  # model dir, file hashes
    versions: dict = field(default_factory=dict)  # onnxruntime, optimum, transformers, torch
    opset: int | None = None
    validation: dict = field(default_factory=dict)  # texts, batch sizes, tolerances, tokenizer checks
    quantization: dict = field(default_factory=dict)  # CPU target, calibration, every int8 candidate's figures
    files: dict = field(default_factory=dict)  # file name -> sha256 of every file of the export but manifest.json
    format_version: int = MANIFEST_FORMAT_VERSION
    # The decision rule serving applies (jbert.json's label_thresholds / min_confidence), for the reader
    # of the manifest; empty when the model has none (decisions as before thresholds existed).
    decision: dict = field(default_factory=dict)
    # The model directory's fitted softmax temperature (jbert.json); serving divides logits by it
    # before softmax. None (and every export written before it existed): raw softmax.
    temperature: float | None = None
    # How texts longer than max_length are read (jbert.json's long_text: mode, stride, pooling), for
    # the reader of the manifest; None (left out): truncated, as before windows existed.
    long_text: dict | None = None

    def to_dict(self) -> dict:
        """Plain dict for JSON (no `decision` or `long_text` key when the model has none, as before they existed)."""
        values = asdict(self)
        if not values.get("decision"):
            values.pop("decision", None)
        if values.get("long_text") is None:
            values.pop("long_text", None)
        return values

    @classmethod
    def from_dict(cls, values: dict, where: str = MANIFEST_FILE) -> "Manifest":
        """Validate and build; a newer format version or missing key is a UserError."""
        version = values.get("format_version")
        if not isinstance(version, int):
            raise UserError(f"{where}: missing format_version; this is not a jbert export manifest")
        if version > MANIFEST_FORMAT_VERSION:
            raise UserError(
                f"{where}: format_version {version} is newer than this jbert understands "
                f"({MANIFEST_FORMAT_VERSION}); upgrade jbert or re-export with this version"
            )
        missing = [k for k in ("task", "labels", "max_length", "is_pair", "default_model", "models") if k not in values]
        if missing:
            raise UserError(f"{where}: missing keys {missing}; re-export the model with export.py")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        model_known = {f.name for f in fields(ManifestModelFile)}
        kwargs["models"] = {
            name: ManifestModelFile(**{k: v for k, v in entry.items() if k in model_known})
            for name, entry in values["models"].items()
        }
        kwargs["temperature"] = checked_temperature(values.get("temperature"), where)
        if kwargs["default_model"] not in kwargs["models"]:
            raise UserError(f"{where}: default_model {kwargs['default_model']!r} is not among {list(kwargs['models'])}")
        return cls(**kwargs)

    def save(self, directory: str | os.PathLike) -> None:
        """Write `manifest.json` into a directory."""
        write_json(Path(directory) / MANIFEST_FILE, self.to_dict())

    def record_files(self, directory: str | os.PathLike) -> None:
        """Set `files` to the sha256 of every file in DIRECTORY (except manifest.json), before `save`."""
        self.files = hash_directory(directory, exclude=(MANIFEST_FILE,))

    def verify_files(self, directory: str | os.PathLike) -> None:
        """Refuse an export whose files changed since export: UserError naming each missing or changed file.

        Exports written before the hashes were recorded (no `files`) are accepted as they are.
        """
        problems = mismatched_files(directory, self.files, listed_in=str(Path(directory) / MANIFEST_FILE))
        if problems:
            raise UserError(f"refusing to load {directory}: " + "; ".join(problems)
                            + ". Copy the complete export directory again or re-export the model with export.py")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Manifest":
        """Read and validate `manifest.json` of an export directory."""
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not directory.is_dir():
            raise UserError(f"export directory {directory} does not exist")
        if not path.is_file():
            raise UserError(
                f"{directory} has no {MANIFEST_FILE}; it is not a jbert export directory "
                f"(create one with: python export.py MODEL_DIR {directory})"
            )
        return cls.from_dict(read_json(path), where=str(path))

