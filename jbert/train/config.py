"""Training options: one dataclass is the single source for CLI flags, YAML recipes and --help.

`train.py --config configs/NAME.yaml --learning_rate 3e-5`: YAML values become the defaults, flags
on the command line override them. `validate()` reports every problem at once before any work.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

import yaml

from jbert.core.cli import hf_argument_parser, options_from_args, option
from jbert.core.errors import UserError, format_problems
from jbert.core.safe_input import file_kind, read_text_bounded
from jbert.core.windows import LONG_TEXT_MODES, WINDOW_POOLINGS, check_stride, default_stride
from jbert.train.recipe_values import typed_recipe_values


def _split_paths(value: str) -> list[str]:
    from jbert.data.unlabeled import split_paths  # the reader's own rule, so the check and the read agree

    return split_paths(value)


SIZE_PRESETS = ("tiny", "mini", "small", "base")
TASKS = ("auto", "single_label", "multi_label", "regression", "mlm", "distill")
# The collective timeout (--collective_timeout_seconds): how long a process waits in an all-reduce or
# barrier for the others. 30 minutes, PyTorch's own gloo default, made explicit and the same for NCCL
# (whose default is 10): the main process alone prepares the data and writes the model directory
# with test predictions while the others wait in a barrier, which can take many minutes on a large
# data set, and a timeout there would kill a healthy run. A dead process on the same machine is
# noticed at once (its sockets close); the timeout bounds the wait for a hung one or a lost machine.
DEFAULT_COLLECTIVE_TIMEOUT_SECONDS = 1800


@dataclass
class TrainConfig:
    """All options of a training run (flag names follow transformers' example scripts)."""

    # --- model and tokenizer
    model_name_or_path: Optional[str] = option(None, "Hugging Face model id or local directory to fine-tune, e.g. cl-tohoku/bert-base-japanese-v3.")
    from_scratch: Optional[str] = option(None, "Instead of a pretrained model, build a WordPiece vocabulary from the training texts and a randomly initialised BERT of this size.", choices=SIZE_PRESETS)
    tokenizer_name: Optional[str] = option(None, "Tokenizer id or directory when it differs from --model_name_or_path.")
    mecab_dic: Optional[str] = option(None, "MeCab dictionary for Japanese tokenizers: unidic_lite, unidic, ipadic, or a dictionary directory (default: the tokenizer's own setting).")
    vocab_size: int = option(8000, "Vocabulary size for --from_scratch.")
    dropout: Optional[float] = option(None, "Override hidden and attention dropout of the model (0 for deterministic equivalence checks).")
    trust_remote_code: bool = option(False, "Allow model code from the hub to run. Off by default: only enable for repositories you trust.")
    # --- data
    train_file: Optional[str] = option(None, "Training data: CSV, TSV, JSON lines, Parquet, or a datasets.save_to_disk directory. --task mlm: also .txt (one text per line), and several files separated by commas.")
    validation_file: Optional[str] = option(None, "Validation data (same formats). Without it, a stratified split of the training file is used.")
    test_file: Optional[str] = option(None, "Test data: evaluated at the end and predictions written to predictions_test.jsonl.")
    text_column: str = option("text", "Column with the text to classify. --task mlm: several columns separated by commas (e.g. sentence1,sentence2) all count as texts.")
    text_pair_column: Optional[str] = option(None, "Column with the second text, for sentence-pair classification.")
    label_column: str = option("label", "Column with the label(s).")
    task: str = option("auto", "single_label, multi_label (list column or --label_delimiter), regression (float labels), auto: detect from the labels; or mlm: masked-LM pretraining on unlabeled text (--train_file .txt one text per line, or a table with --text_column); or distill: a student learns --teacher's soft targets (docs/distillation.md).", choices=TASKS)
    mlm_probability: float = option(0.15, "--task mlm: fraction of tokens to predict, chosen as whole MeCab words (80 percent become [MASK], 10 percent a random token, 10 percent stay).")
    mlm_pack: bool = option(True, "--task mlm: pack texts into full --max_length sequences; --mlm_pack false keeps one text per sequence (truncated).")
    label_delimiter: Optional[str] = option(None, "Delimiter of a multi-label column given as text, e.g. '|' for 'food|service'.")
    multi_label_threshold: float = option(0.5, "Sigmoid probability above which a multi-label class is predicted.")
    multi_label_thresholds: str = option("tuned", "Multi-label: tuned gives each label the threshold that maximises its F1 on the validation set (labels with fewer than 5 positive validation examples, or no gain, keep --multi_label_threshold); global uses --multi_label_threshold for every label.", choices=("tuned", "global"))
    min_confidence: Optional[float] = option(None, "Single-label abstention: inputs whose top score is below this (0 < P <= 1) are answered 'abstained' by serving (HTTP /v1/predict, batch scoring).")
    target_precision: Optional[float] = option(None, "Single-label abstention chosen on validation: the lowest confidence whose accepted predictions reach this precision (0 < P <= 1) becomes --min_confidence; the coverage is reported. Multi-label: each label's threshold becomes the lowest whose validation positives reach this precision (instead of the F1-best). Unreachable: an error, nothing written.")
    encoding: str = option("auto", "Text encoding of CSV/TSV/JSONL files: auto (UTF-8, UTF-8 with BOM or cp932), utf-8, utf-8-sig, cp932, shift_jis ...")
    validation_split: float = option(0.1, "Fraction of the training file held out (seeded, shuffled, stratified) when no --validation_file is given.")
    strict: bool = option(False, "Fail on empty texts or labels instead of skipping and counting them.")
    nfkc: bool = option(True, "Unicode NFKC normalisation of texts (training and serving alike).")
    remove_control: bool = option(True, "Remove control and invisible format characters from texts.")
    normalize_whitespace: bool = option(True, "Turn newlines, tabs, ideographic spaces and runs of spaces into one space.")
    max_length: int = option(128, "Maximum tokens per example; longer texts are truncated (and counted), or read as windows with --long_text windows.")
    long_text: str = option("truncate", "Texts longer than --max_length tokens: truncate (decide on the beginning, as transformers does) or windows (read the whole text in overlapping windows of --max_length, train on every window with the text's label, and pool the window logits into one answer per text in evaluation, the test file, the export check and serving; pairs: the second text is windowed).", choices=LONG_TEXT_MODES)
    stride: Optional[int] = option(None, "--long_text windows: tokens shared by consecutive windows (default a quarter of --max_length; at most half of a window's text tokens).")
    window_pooling: str = option("mean", "--long_text windows: how a text's window logits become its logits: mean (default: every part counts, one odd window cannot decide alone), max (the most confident window decides each class: one deciding sentence anywhere) or first (the first window only, as truncation).", choices=WINDOW_POOLINGS)
    max_train_windows: int = option(0, "--long_text windows: train on at most the first N windows of each text (0: every window). Evaluation and serving always read every window.")
    # --- optimisation
    output_dir: str = option("outputs/model", "Where the fine-tuned model directory is written.")
    overwrite_output_dir: bool = option(False, "Replace a non-empty --output_dir.")
    per_device_train_batch_size: int = option(16, "Training batch size per process.")
    per_device_eval_batch_size: int = option(64, "Evaluation batch size per process.")
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.")
    learning_rate: float = option(5e-5, "Peak learning rate of AdamW.")
    weight_decay: float = option(0.01, "AdamW weight decay (never applied to biases and LayerNorm weights).")
    adam_epsilon: float = option(1e-8, "AdamW epsilon.")
    num_train_epochs: float = option(3.0, "Number of passes over the training data.")
    max_train_steps: Optional[int] = option(None, "Stop after this many optimizer steps (overrides --num_train_epochs).")
    lr_scheduler_type: str = option("linear", "Learning-rate schedule after warm-up.", choices=("linear", "cosine", "constant"))
    warmup_ratio: float = option(0.0, "Warm-up as a fraction of all optimizer steps.")
    warmup_steps: int = option(0, "Warm-up in optimizer steps (overrides --warmup_ratio when > 0).")
    max_grad_norm: float = option(1.0, "Gradient clipping norm (0 disables).")
    mixed_precision: Optional[str] = option(None, "no, fp16 or bf16 (default: from the accelerate config).", choices=("no", "fp16", "bf16"))
    tf32: Optional[bool] = option(None, "Allow TF32 matmuls on NVIDIA Ampere+ GPUs (faster fp32 at ~1e-3 relative precision); default: PyTorch's setting. No effect on CPU.")
    group_by_length: bool = option(True, "Batch texts of similar length together (less padding, faster).")
    seed: int = option(42, "Random seed for data splits, shuffling, initialisation and dropout.")
    full_determinism: bool = option(False, "Deterministic algorithms everywhere (slower).")
    # --- evaluation, selection, checkpoints
    eval_strategy: str = option("epoch", "Evaluate every epoch or every --eval_steps optimizer steps.", choices=("epoch", "steps"))
    eval_steps: int = option(100, "Evaluation interval when --eval_strategy steps.")
    metric_for_best_model: str = option("auto", "Metric that selects the best model: accuracy, macro_f1, micro_f1, loss, pearson, spearman, mse, subset_accuracy ... (auto: macro_f1, micro_f1 for multi-label, pearson for regression).")
    early_stopping_patience: Optional[int] = option(None, "Stop after this many evaluations without improvement.")
    baseline: str = option("tfidf_logreg", "Also fit TF-IDF char 1-3 grams + logistic regression on the same splits and report it beside the model (classification only); none skips it.", choices=("tfidf_logreg", "none"))
    calibrate: str = option("temperature", "Single-label classification: fit a softmax temperature on the validation set after training (Guo et al. 2017), report ECE, Brier score and log-loss before and after and a reliability diagram, and carry it into the export so served scores are calibrated (the predicted label never changes); none keeps raw softmax scores.", choices=("temperature", "none"))
    extra_metrics: Optional[str] = option(None, "Comma-separated `evaluate` metrics by name or local path (loaded only when asked; a name needs the hub).")
    checkpointing_steps: Optional[str] = option(None, "Save a resumable checkpoint every N optimizer steps, or 'epoch'.")
    save_total_limit: int = option(2, "Keep only the newest K checkpoints.")
    resume_from_checkpoint: Optional[str] = option(None, "Resume: a checkpoint directory, or 'latest' (also 'auto') for the newest complete one in <output_dir>.checkpoints; with none there, start fresh.", aliases=["--resume"])
    collective_timeout_seconds: int = option(DEFAULT_COLLECTIVE_TIMEOUT_SECONDS, "Multi-process runs: how long a process waits in a collective (gradient all-reduce, barrier) for the others before it stops with an error naming this option (default 30 minutes, PyTorch's gloo default). Must exceed the longest step one process takes alone (data preparation, writing the model directory and test predictions on the main process).")
    with_tracking: bool = option(False, "Log metrics to the trackers of --report_to.")
    report_to: str = option("tensorboard", "Tracker for --with_tracking (tensorboard, wandb, all ...).")
    logging_steps: int = option(20, "Log the training loss every N optimizer steps.")
    dataloader_num_workers: int = option(0, "Worker processes for data loading.")
    disable_tqdm: bool = option(False, "No progress output: neither the bar on a terminal nor the progress line every 10 s (JBERT_PROGRESS_INTERVAL) in a log.")
    hp_search: int = option(0, "Run N Optuna trials (learning rate, epochs, warm-up, dropout, batch size around the given values; poor trials pruned) on the validation split, then train the final model with the best; 0: off.")
    config: Optional[str] = option(None, "YAML recipe whose values become the defaults (flags still override).")
    # --- knowledge distillation (--task distill; jbert.train.distill)
    teacher: Optional[str] = option(None, "--task distill: the teacher, a model directory or an export directory; several separated by commas are an ensemble whose probabilities are averaged.")
    distill_temperature: float = option(2.0, "--task distill: softmax (or sigmoid) temperature of the soft targets; the soft loss is scaled by its square (Hinton et al. 2015).")
    distill_alpha: float = option(0.5, "--task distill: weight of the soft-target loss on labelled texts (1 - alpha goes to the hard labels); texts without labels learn from the teacher alone.")
    student_layers: Optional[str] = option(None, "--task distill: initialise the student from these encoder layers of the (first) teacher model directory, e.g. 0,2,4 (as DistilBERT); instead of --from_scratch / --model_name_or_path.")
    distill_tokenizer: str = option("teacher", "--task distill with --from_scratch: the student uses the teacher's tokenizer (teacher), or a WordPiece vocabulary trained on the training texts (own).", choices=("teacher", "own"))
    unlabeled_file: Optional[str] = option(None, "--task distill: more texts without labels (.txt one a line, or a table with --text_column) that the student learns from the teacher's soft targets.")
    # --- distillation: intermediate-layer losses (jbert.train.distill_intermediate)
    distill_hidden_weight: float = option(0.0, "--task distill: weight of a hidden-state loss (TinyBERT): the student's hidden states, through a learned projection when the widths differ, learn the (first) teacher's at the mapped layers; the teacher must be a model directory and share the student's tokenizer. 0 = off.")
    distill_attention_weight: float = option(0.0, "--task distill: weight of an attention loss (TinyBERT's, as MiniLM's KL divergence): each student layer's self-attention distributions learn the mapped teacher layer's (per head when the head counts are equal, else head-averaged); same teacher and tokenizer needs as --distill_hidden_weight; switches both models to the eager attention. 0 = off.")
    # --- from scratch: which architecture and which vocabulary (BERT + MeCab WordPiece unless chosen)
    architecture: str = option("bert", "--from_scratch: the encoder to build: bert (default), modernbert (RoPE, local/global attention, up to 8,192 tokens) or deberta-v2 (DeBERTa-v3 shape: relative attention, no token types). Classification tasks; --task mlm builds BERT.", choices=("bert", "modernbert", "deberta-v2"))
    vocabulary: str = option("mecab-wordpiece", "--from_scratch: the vocabulary trained on the training texts: mecab-wordpiece (MeCab words, then WordPiece; a BertJapaneseTokenizer) or unigram (SentencePiece-style Unigram on the raw text, no word splitter; a tokenizer.json).", choices=("mecab-wordpiece", "unigram"))
    # --- quantisation-aware training (--qat; jbert.train.qat)
    qat: bool = option(False, "Quantisation-aware training for the last --qat_epochs epochs of a classification, regression or distillation run: every Linear and Embedding computes with fake int8 as export.py --quantize's dynamic int8 will (weights per channel, activations per batch), and the saved weights lie on the int8 grid, so a fully int8 export keeps the fp32 model's decisions.")
    qat_epochs: int = option(1, "--qat: how many of the last epochs train with fake int8 (as many as the run has, or more: the whole run). Only evaluations made with QAT on select the best weights, and early stopping watches only them.")
    qat_per_channel: bool = option(False, "--qat: fake-quantise weights per output channel, to match an export with --per_channel; the default, per tensor, matches export's default dynamic int8.")
    qat_consistency: float = option(0.0, "--qat: weight of a self-distillation loss in the QAT epochs: the fake-int8 model also learns the fp32 model's own answers (KL divergence from a second, fp32 pass without gradients, same dropout), so that the int8 export agrees with the fp32 one (export's --min_agreement gate). 0 = off.")
    # --- long documents: how windows train (--window_training; jbert.train.document_batches)
    window_training: str = option("each", "--long_text windows: each (every window is an example with its text's label) or document (multiple-instance: a text is one example, its windows go through the model together and the loss is on their logits pooled by --window_pooling, as evaluation and serving pool them; --per_device_train_batch_size counts texts, each keeping at most its first --max_train_windows windows, 8 when 0).", choices=("each", "document"))

    def to_dict(self) -> dict:
        """Plain dict (YAML/JSON); with `value_sources` (where each value came from) once parsed."""
        values = asdict(self)
        sources = getattr(self, "value_sources", None)
        if sources:
            values["value_sources"] = dict(sources)
        return values

    @property
    def checkpoint_dir(self) -> Path:
        """Where resumable checkpoints live."""
        return Path(self.output_dir + ".checkpoints")

    def validate(self) -> None:
        """Check all options together; raise one UserError listing every problem."""
        problems: list[str] = []
        if not self.model_name_or_path and not self.from_scratch and not (self.task == "distill" and self.student_layers):
            problems.append("give --model_name_or_path (e.g. cl-tohoku/bert-base-japanese-v3) or --from_scratch {tiny,mini,small,base}")
        if self.model_name_or_path and self.from_scratch:
            problems.append("--model_name_or_path and --from_scratch exclude each other; choose one")
        if not self.train_file:
            problems.append("--train_file is required")
        for name in ("train_file", "validation_file", "test_file"):
            value = getattr(self, name)
            # --task mlm pools several unlabeled files: --train_file a.txt,b.jsonl
            paths = _split_paths(value) if value and self.task == "mlm" else [value] if value else []
            for path in paths:
                if not os.path.exists(path):
                    problems.append(f"--{name} {path} does not exist")
                elif file_kind(path) not in (None, "a directory"):
                    # a FIFO or /dev/zero never ends: refused here, before any reader waits on it
                    # (a directory is a datasets.save_to_disk dataset, checked when it is opened)
                    problems.append(f"--{name} {path} is {file_kind(path)}, not a regular file; write the data to a file")
        if self.model_name_or_path and _looks_like_path(self.model_name_or_path) and not os.path.exists(self.model_name_or_path):
            problems.append(f"--model_name_or_path {self.model_name_or_path} does not exist (a local path was given)")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "max_length", "eval_steps", "logging_steps", "save_total_limit", "vocab_size", "collective_timeout_seconds"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be at least 1 (got {getattr(self, name)})")
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"--{item.name} must be a finite number (got {value})")
        if self.learning_rate <= 0:
            problems.append(f"--learning_rate must be positive (got {self.learning_rate})")
        if self.num_train_epochs <= 0 and not self.max_train_steps:
            problems.append("--num_train_epochs must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if not 0 < self.validation_split < 1:
            problems.append(f"--validation_split must be in (0, 1) (got {self.validation_split})")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not 0 < self.multi_label_threshold < 1:
            problems.append(f"--multi_label_threshold must be in (0, 1) (got {self.multi_label_threshold})")
        problems += self._decision_rule_problems()
        problems += self._long_text_problems()
        problems += self._window_training_problems()
        problems += self._scratch_choice_problems()
        if self.checkpointing_steps is not None and self.checkpointing_steps != "epoch" and not str(self.checkpointing_steps).isdigit():
            problems.append(f"--checkpointing_steps must be a number of steps or 'epoch' (got {self.checkpointing_steps!r})")
        if self.task == "mlm" and not 0 < self.mlm_probability < 1:
            problems.append(f"--mlm_probability must be in (0, 1) (got {self.mlm_probability})")
        if self.task == "mlm" and self.metric_for_best_model not in ("auto", "loss", "perplexity"):
            problems.append(f"--metric_for_best_model {self.metric_for_best_model} does not apply to --task mlm "
                            "(the best model has the lowest validation loss, i.e. perplexity)")
        if self.hp_search < 0:
            problems.append(f"--hp_search must be a number of trials, 0 for none (got {self.hp_search})")
        if self.hp_search and self.task == "mlm":
            problems.append("--hp_search tunes classification and regression runs, not --task mlm")
        if self.hp_search and self.resume_from_checkpoint:
            problems.append("--hp_search cannot resume a checkpoint: the trials start fresh; drop --resume_from_checkpoint")
        if self.label_delimiter and self.task not in ("auto", "multi_label", "distill"):
            problems.append(f"--label_delimiter only makes sense for multi-label data, but --task is {self.task}")
        regression_metrics = {"mse", "pearson", "spearman", "rmse", "mae"}
        classification_metrics = {"accuracy", "macro_f1", "micro_f1", "weighted_f1", "subset_accuracy"}
        metric = self.metric_for_best_model
        if self.task in ("single_label", "multi_label") and metric in regression_metrics:
            problems.append(f"--metric_for_best_model {metric} is a regression metric but --task is {self.task}")
        if self.task == "regression" and metric in classification_metrics:
            problems.append(f"--metric_for_best_model {metric} is a classification metric but --task is regression")
        if self.task == "multi_label" and metric == "accuracy":
            problems.append("--metric_for_best_model accuracy is undefined for multi-label; use subset_accuracy, micro_f1 or macro_f1")
        problems += self._qat_problems()
        if self.task == "distill" or self.teacher or self.student_layers or self.unlabeled_file:
            from jbert.train.distill_options import distill_problems  # the distillation task's own checks

            problems += distill_problems(self)
        if problems:
            raise UserError(format_problems("invalid options", problems))


    def _qat_problems(self) -> list[str]:
        """--qat and --qat_epochs: a classification or distillation run, with at least one QAT epoch."""
        if not self.qat:
            return [f"--{name} applies to --qat runs only; add --qat or drop it"
                    for name, given in (("qat_epochs", self.qat_epochs != 1), ("qat_per_channel", self.qat_per_channel),
                                        ("qat_consistency", self.qat_consistency != 0)) if given]
        problems = []
        if self.qat_consistency < 0:
            problems.append(f"--qat_consistency must be 0 (off) or more (got {self.qat_consistency})")
        if self.qat_epochs < 1:
            problems.append(f"--qat_epochs must be at least 1 (got {self.qat_epochs})")
        if self.task == "mlm":
            problems.append("--qat applies to classification, regression and distillation runs, not --task mlm "
                            "(export.py exports classifiers); fine-tune with --qat instead")
        return problems

    def _decision_rule_problems(self) -> list[str]:
        """Abstention options: each a probability in (0, 1], one of the two, classification only."""
        problems = []
        for name in ("min_confidence", "target_precision"):
            value = getattr(self, name)
            if value is not None and math.isfinite(value) and not 0 < value <= 1:
                problems.append(f"--{name} must be in (0, 1] (got {value})")
        if self.min_confidence is not None and self.target_precision is not None:
            problems.append("--min_confidence and --target_precision exclude each other: give the threshold, "
                            "or the precision to choose it for, not both")
        if self.min_confidence is not None and self.task in ("multi_label", "regression", "mlm"):
            problems.append(f"--min_confidence applies to single-label classification, not --task {self.task}")
        if self.target_precision is not None and self.task in ("regression", "mlm"):
            problems.append(f"--target_precision applies to single-label and multi-label classification, not --task {self.task}")
        return problems

    def _long_text_problems(self) -> list[str]:
        """Window options: only with --long_text windows, a stride below half a window, not for --task mlm."""
        problems = []
        if self.long_text != "windows":
            for name, default in (("stride", None), ("max_train_windows", 0)):
                if getattr(self, name) != default:
                    problems.append(f"--{name} applies to --long_text windows only; add --long_text windows or drop it")
            return problems
        if self.task == "mlm":
            problems.append("--long_text windows applies to classification and regression, not --task mlm "
                            "(--mlm_pack already uses every token of a long text)")
        if self.task == "distill":
            problems.append("--long_text windows is not available for the student of --task distill yet "
                            "(a teacher trained with windows is read with its windows); drop --long_text")
        if self.max_train_windows < 0:
            problems.append(f"--max_train_windows must be 0 (every window) or more (got {self.max_train_windows})")
        # A pair's special tokens (3 for BERT) leave the least room; the tokenizer's own count is checked again
        # when the data is tokenized.
        try:
            check_stride(self.window_stride, self.max_length, 3 if self.text_pair_column else 2)
        except UserError as err:
            problems.append(str(err))
        return problems

    def _window_training_problems(self) -> list[str]:
        """--window_training document: only with --long_text windows, and a pooling that reads every window."""
        if self.window_training == "each":
            return []
        if self.long_text != "windows":
            return ["--window_training document applies to --long_text windows only; add --long_text windows or drop it"]
        if self.window_pooling == "first":
            return ["--window_training document with --window_pooling first would train on first windows only; "
                    "use --window_pooling mean or max, or --window_training each --max_train_windows 1"]
        return []

    @property
    def window_stride(self) -> int:
        """--stride, or its default for --max_length."""
        return default_stride(self.max_length) if self.stride is None else self.stride

    def _scratch_choice_problems(self) -> list[str]:
        """--architecture / --vocabulary: only with --from_scratch; MLM keeps BERT + MeCab WordPiece."""
        problems = []
        chosen = [f"--{name} {getattr(self, name)}" for name, default in (("architecture", "bert"), ("vocabulary", "mecab-wordpiece"))
                  if getattr(self, name) != default]
        if chosen and not self.from_scratch:
            problems.append(f"{' and '.join(chosen)} apply to --from_scratch only (a pretrained model brings its own)")
        if chosen and self.task == "mlm":
            problems.append(f"{' and '.join(chosen)}: --task mlm builds BERT with a MeCab WordPiece vocabulary "
                            "(its whole-word masking needs MeCab words); drop them")
        if self.from_scratch and self.architecture == "modernbert" and self.max_length > 8192:
            problems.append(f"--max_length {self.max_length} is beyond ModernBERT's 8192 positions")
        return problems


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") > 1


def build_parser():
    """The argparse parser of TrainConfig's flags (jbert.core.cli, with transformers.HfArgumentParser's rules)."""
    return hf_argument_parser(TrainConfig, description="Fine-tune a Japanese BERT text classifier with Accelerate.")


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse flags, with `--config FILE.yaml` values as defaults; validate everything."""
    parser = build_parser()
    argv = list(argv) if argv is not None else None
    from jbert.train.recipes import apply_recipe, given_option_names

    known, _ = parser.parse_known_args(argv)
    recipe_values = {}
    if known.config:
        recipe_values = load_yaml_recipe(known.config)
        parser.set_defaults(**recipe_values)
    config = options_from_args(TrainConfig, parser.parse_args(argv))
    if config.checkpointing_steps is not None:
        config.checkpointing_steps = str(config.checkpointing_steps)
    # --from_scratch defaults fill only what neither a flag nor the YAML gave
    given = given_option_names(sys.argv[1:] if argv is None else argv, parser)
    apply_recipe(config, given, known.config, recipe_values)
    config.validate()
    return config


# A recipe is a page of options; anything larger is the wrong file (and is not read into memory).
MAX_RECIPE_BYTES = 1024 * 1024


def load_yaml_recipe(path: str) -> dict:
    """Read a YAML recipe: its values checked against TrainConfig's field types and converted.

    Unknown keys, wrong-typed values (jbert.train.recipe_values says what is accepted), unparsable
    files, files over MAX_RECIPE_BYTES and paths that are not regular files (a FIFO, /dev/zero)
    are UserErrors; every problem with the values is listed in one message.
    """
    if not os.path.exists(path):
        raise UserError(f"--config {path} does not exist")
    text = read_text_bounded(path, MAX_RECIPE_BYTES, f"--config {path}")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise UserError(f"--config {path} nests lists or mappings too deeply to be read") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path} must be a mapping of option: value")
    values.pop("value_sources", None)  # a saved training_config.yaml: where values came from, not options
    converted, problems = typed_recipe_values(TrainConfig, values)
    if problems:
        raise UserError(format_problems(f"--config {path}: {len(problems)} problem(s) with its values", problems))
    return converted
