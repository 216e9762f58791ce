"""The int8 search: try int8 recipes from fastest to most conservative, keep the fastest that keeps fp32's decisions.

Tiers, each tried only when no candidate of the tiers before it met --min_agreement (and, where
the held-out texts have labels, kept accuracy within --max_accuracy_change):

1. dynamic int8 (the --per_channel / --quantize_ops recipe, and per channel if that was not it)
   and static QDQ int8, per channel, calibrated with each calibration method (min-max,
   percentile, entropy);
2. the MatMuls only (embedding tables fp32): static with the calibration method that agreed best
   in tier 1, and dynamic per channel;
3. rounds that keep the nodes that hurt most in fp32, `EXCLUDE_STEP` more per round, in the best
   static model (matmul-only preferred) and in per-channel dynamic int8: each quantised
   activation's signal-to-quantisation-noise ratio is measured with onnxruntime's QDQ debugging
   module (`onnxruntime.quantization.qdq_loss_debug`) on calibration texts, and the MatMuls
   reading the noisiest activations go first. This needs calibration texts.

Every candidate is measured in the project runtime (`jbert.serve.runtime.OnnxClassifier`: the
serving tokenizer, length-sorted batches, the serving session options) on the held-out
validation texts, never on the calibration texts: agreement with fp32 in the measure that fits the
task (`jbert.export.agreement`), accuracy where labels are known, and texts/s, timed in rounds that
alternate with fp32 so a busy machine slows both alike. Within a tier the candidate with the
highest speed-up over fp32 (timed in those same rounds) that meets --min_agreement wins. All figures go to the manifest and to the console as a table.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from jbert.core.artifacts import Manifest, ManifestModelFile
from jbert.core.errors import UserError, ValidationError
from jbert.core.postprocessing import label_thresholds_array
from jbert.export import quantize
from jbert.export.agreement import AGREEMENT_MEASURES, agreement_figures, predicted_labels, quality_figures
from jbert.export.calibration import CALIBRATION_BATCH_SIZE, CalibrationTexts, calibration_dataset
from jbert.export.manifest import onnx_size
from jbert.export.model_dir import ModelDirInfo
from jbert.export.options import CALIBRATION_METHODS, FP32_FILE, QUANTIZED_FILE, REDUCE_RANGE_TARGETS, ExportOptions
from jbert.export.steps import StepLog
from jbert.export.quantize import Int8Recipe
from jbert.export.texts import ValidationExample, encode

TIMING_ROUNDS = 3  # best of 3 alternating rounds: the machine is shared, the best round is the least disturbed
TIMING_TEXTS = 512  # at 1,000+ texts/s a round of 128 lasts 0.1 s: too short to time on a shared machine
EXCLUDE_STEP = 3  # nodes kept fp32 per round of tier 3
MAX_EXCLUDE_ROUNDS = 4
DEBUG_TEXTS = 8  # calibration texts the QDQ debugger runs (it keeps every activation of both graphs)
DEBUG_MAX_LENGTH = 64


@dataclass
class Candidate:
    """One int8 recipe tried by the search and its figures."""

    recipe: Int8Recipe
    tier: int
    path: Optional[Path] = None
    figures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when it was measured, met --min_agreement and kept accuracy within --max_accuracy_change."""
        return bool(self.figures.get("meets_min_agreement")) and self.figures.get("accuracy_kept", True)


class RuntimeMeter:
    """Runs fp32 and int8 files through the project runtime on the held-out texts."""

    def __init__(self, work_dir: Path, info: ModelDirInfo, examples: Sequence[ValidationExample]):
        """Load the serving tokenizer of WORK_DIR and measure the fp32 graph once for its logits."""
        from jbert.tokenization import load_serving_tokenizer

        self.info = info
        self.tokenizer = load_serving_tokenizer(work_dir)
        self.texts = [example.text for example in examples]
        self.pairs = [example.text_pair for example in examples] if info.settings.is_pair else None
        self.labels = [example.label for example in examples]
        self.threshold = label_thresholds_array(info.labels, info.settings.label_thresholds,
                                                info.settings.multi_label_threshold)
        self.manifest = Manifest(task=info.problem_type, labels=info.labels, max_length=info.settings.max_length,
                                 is_pair=info.settings.is_pair, default_model="fp32",
                                 models={"fp32": ManifestModelFile(file=FP32_FILE, precision="fp32")})
        self.fp32 = self._classifier(work_dir / FP32_FILE)
        self.fp32_logits, _ = self._predict(self.fp32, self.texts, self.pairs)
        self.threads = self.fp32.session.get_session_options().intra_op_num_threads

    def _classifier(self, path: Path):
        import onnxruntime

        from jbert.serve.runtime.classifier import OnnxClassifier
        from jbert.serve.runtime.session import make_session_options

        session = onnxruntime.InferenceSession(str(path), make_session_options(), providers=["CPUExecutionProvider"])
        return OnnxClassifier(session, self.tokenizer, self.info.settings, self.manifest, self.info.labels, "fp32", path)

    @staticmethod
    def _predict(classifier, texts, pairs) -> tuple[np.ndarray, float]:
        """(logits, seconds) of the runtime's whole predict path: normalise, tokenize, batch, run, postprocess."""
        started = time.perf_counter()
        encodings = classifier.encode(texts, pairs)
        logits = classifier.run_logits(encodings)
        classifier.format_predictions(classifier.scores_from_logits(logits), [e.truncated for e in encodings])
        return logits, time.perf_counter() - started

    def measure(self, path: Path, min_agreement: float, max_accuracy_change: float) -> dict:
        """Agreement with fp32, accuracy, texts/s (and fp32's in the same rounds) of one ONNX file."""
        classifier = self._classifier(path)
        logits, _ = self._predict(classifier, self.texts, self.pairs)
        problem_type = self.info.problem_type
        figures = agreement_figures(self.fp32_logits, logits, problem_type, self.threshold, self.labels)
        figures["meets_min_agreement"] = figures["agreement"] >= min_agreement
        quality = quality_figures(predicted_labels(logits, problem_type, self.threshold), self.labels, problem_type)
        reference = quality_figures(predicted_labels(self.fp32_logits, problem_type, self.threshold), self.labels, problem_type)
        for metric in ("accuracy", "mse", "pearson"):
            if metric in quality:
                figures[metric] = quality[metric]
                figures[f"{metric}_fp32"] = reference[metric]
        if "accuracy" in figures:
            figures["accuracy_change"] = figures["accuracy"] - figures["accuracy_fp32"]
            # A float tolerance: 0.005 must accept a change of exactly 0.5 point on 1,000 texts.
            figures["accuracy_kept"] = abs(figures["accuracy_change"]) <= max_accuracy_change + 1e-9
        texts = self.texts[:TIMING_TEXTS]
        pairs = None if self.pairs is None else self.pairs[:TIMING_TEXTS]
        best = {"fp32": float("inf"), "int8": float("inf")}
        for _ in range(TIMING_ROUNDS):
            for name, model in (("fp32", self.fp32), ("int8", classifier)):
                best[name] = min(best[name], self._predict(model, texts, pairs)[1])
        figures["texts_per_s"] = round(len(texts) / best["int8"], 1)
        figures["fp32_texts_per_s"] = round(len(texts) / best["fp32"], 1)
        figures["speedup"] = round(best["fp32"] / best["int8"], 2)
        return figures


def rank_nodes_by_error(fp32_path: Path, int8_path: Path, tokenizer, examples: Sequence[ValidationExample],
                        input_names: Sequence[str], scratch_dir: Path, op_types: Sequence[str]) -> list[dict]:
    """Quantised nodes, worst first: the nodes reading the activations int8 rounds most (lowest SQNR, in dB).

    Uses onnxruntime's QDQ debugging module on a few calibration texts: both graphs are run with
    every intermediate tensor as an output, and each QDQ pair's input is compared with its output.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, compute_activation_error, create_activation_matching, modify_model_output_intermediate_tensors,
    )

    encoded = encode(tokenizer, examples[:DEBUG_TEXTS], DEBUG_MAX_LENGTH)

    class OneBatch(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: encoded[name] for name in input_names}])

        def get_next(self):
            return next(self.batches, None)

    activations = {}
    for name, path in (("float", fp32_path), ("qdq", int8_path)):
        augmented = scratch_dir / f"debug-{name}.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented))
        activations[name] = collect_activations(str(augmented), OneBatch())
        augmented.unlink()
    matching = create_activation_matching(activations["qdq"], activations["float"])
    errors = compute_activation_error({name: match for name, match in matching.items() if "float" in match})
    consumers: dict[str, list[str]] = {}
    for node in onnx.load(str(fp32_path), load_external_data=False).graph.node:
        if node.op_type in op_types:
            for tensor in node.input:
                consumers.setdefault(tensor, []).append(node.name)
    ranked, seen = [], set()
    for tensor, error in sorted(errors.items(), key=lambda item: item[1]["qdq_err"]):
        for node in consumers.get(tensor, []):
            if node not in seen:
                seen.add(node)
                ranked.append({"node": node, "activation": tensor, "sqnr_db": round(float(error["qdq_err"]), 2),
                               "sqnr_vs_fp32_db": round(float(error.get("xmodel_err", float("nan"))), 2)})
    return ranked


def format_table(candidates: Sequence[Candidate], measure_name: str) -> str:
    """The candidates as a small text table, in the order they were tried."""
    header = f"{'candidate':<34} {'tier':>4} {'agreement':>9} {'accuracy':>15} {'texts/s':>8} {'x fp32':>6} {'MB':>6}  result"
    lines = [f"int8 candidates ({measure_name}; accuracy int8 / fp32 on the labelled held-out texts):", header]
    for candidate in candidates:
        f = candidate.figures
        accuracy = f"{f['accuracy']:.4f}/{f['accuracy_fp32']:.4f}" if "accuracy" in f else "-"
        agreement = f"{f['agreement']:.2%}" if "agreement" in f else "-"
        speed = f"{f['texts_per_s']:.1f}" if "texts_per_s" in f else "-"
        ratio = f"{f['speedup']:.2f}" if "speedup" in f else "-"
        size = f"{f['size_bytes'] / 1e6:.1f}" if "size_bytes" in f else "-"
        lines.append(f"{candidate.recipe.name:<34} {candidate.tier:>4} {agreement:>9} {accuracy:>15} {speed:>8} {ratio:>6} {size:>6}  {f.get('result', '')}")
    return "\n".join(lines)


class Int8Search:
    """State of one search: the files made, the calibration ranges, the figures, the time spent."""

    def __init__(self, work_dir: Path, info: ModelDirInfo, tokenizer, examples: Sequence[ValidationExample],
                 calibration: Optional[CalibrationTexts], options: ExportOptions, steps: StepLog):
        """Resolve the target, load the calibration texts (when static int8 is wanted) and measure fp32."""
        self.started = time.perf_counter()
        self.work_dir, self.info, self.tokenizer, self.options, self.steps = work_dir, info, tokenizer, options, steps
        self.target, self.target_source = quantize.resolve_target(options.quantize)
        self.reduce_range = options.reduce_range if self.target in REDUCE_RANGE_TARGETS else None
        self.fp32_path = work_dir / FP32_FILE
        self.scratch_dir = work_dir / ".int8-search"
        self.scratch_dir.mkdir()
        self.candidates: list[Candidate] = []
        self.ranges: dict[str, dict] = {}
        self.ranked_nodes: Optional[list[dict]] = None
        self.exclude_rounds = 0
        self.calibration = calibration or CalibrationTexts([], "not used (--quantize_method dynamic)")
        self.subgraphs = quantize.subgraph_nodes(self.fp32_path)
        if self.subgraphs and options.quantize_method != "dynamic":
            why = (f"the graph has {len(self.subgraphs)} node(s) with subgraphs ({', '.join(sorted(set(self.subgraphs)))}, "
                   f"from the {getattr(info.config, 'model_type', '?')} architecture), which Optimum's static quantizer does not support")
            if options.quantize_method == "static":
                raise UserError(f"--quantize_method static cannot be used: {why}; use --quantize_method dynamic "
                                "(or auto, which tries dynamic int8 only for this graph)")
            self.calibration = CalibrationTexts([], f"not used: {why}")
            steps.step(f"static int8 skipped: {why}")
        elif options.quantize_method == "auto" and not self.calibration.examples:
            steps.step("static int8 skipped: no calibration texts (" + "; ".join(self.calibration.problems) + "); give --calibration_file")
        steps.step(f"int8 search for {self.target} ({self.target_source}) on {len(examples)} held-out texts")
        self.meter = RuntimeMeter(work_dir, info, examples)
        self.input_names = [node.name for node in self.meter.fp32.session.get_inputs()]

    # ------------------------------------------------------------------ candidates
    def _methods(self) -> list[str]:
        if self.options.calibration_method:
            return [self.options.calibration_method]
        return list(CALIBRATION_METHODS) if self.options.quantize_method == "auto" else ["minmax"]

    def _ranges(self, method: str) -> dict:
        if method not in self.ranges:
            self.steps.step(f"calibrating ({method}) on {len(self.calibration.examples)} texts ({self.calibration.source})")
            dataset = calibration_dataset(self.tokenizer, self.calibration.examples, self.info.settings.max_length, self.input_names)
            batch_size = CALIBRATION_BATCH_SIZE if len(dataset) % CALIBRATION_BATCH_SIZE == 0 else 1
            self.ranges[method] = quantize.calibrate(self.fp32_path, method, dataset, self.scratch_dir, batch_size)
        return self.ranges[method]

    def _check_time(self) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.options.max_quantize_seconds:
            raise UserError(
                f"the int8 search ran {elapsed:.0f} s, past --max_quantize_seconds {self.options.max_quantize_seconds:g}, "
                f"after {len(self.candidates)} candidate(s); nothing was written. Raise --max_quantize_seconds, "
                "narrow the search (--calibration_method, --quantize_method dynamic or static) or give fewer "
                f"--calibration_texts / --max_validation_texts.\n{format_table(self.candidates, self.measure_name)}"
            )

    @property
    def measure_name(self) -> str:
        """The agreement measure of this model's task."""
        return AGREEMENT_MEASURES[self.info.problem_type]

    def try_recipe(self, recipe: Int8Recipe, tier: int) -> Candidate:
        """Make one candidate file, measure it, record its figures."""
        candidate = Candidate(recipe, tier, self.scratch_dir / f"{recipe.name}.onnx")
        self.candidates.append(candidate)
        started = time.perf_counter()
        if recipe.method == "dynamic":
            quantize.quantize_dynamic(self.fp32_path, candidate.path, self.target, recipe.per_channel, self.reduce_range,
                                      recipe.quantize_ops, recipe.nodes_excluded)
        else:
            quantize.quantize_static(self.fp32_path, candidate.path, self.target, recipe, self._ranges(recipe.calibration), self.reduce_range)
        candidate.figures = {"name": recipe.name, "tier": tier, "method": recipe.method, "calibration": recipe.calibration,
                             "quantize_ops": recipe.quantize_ops, "per_channel": recipe.per_channel,
                             "nodes_excluded": list(recipe.nodes_excluded), "size_bytes": onnx_size(candidate.path),
                             **self.meter.measure(candidate.path, self.options.min_agreement, self.options.max_accuracy_change)}
        candidate.figures["seconds"] = round(time.perf_counter() - started, 1)
        f = candidate.figures
        if not f["meets_min_agreement"]:
            f["result"] = "below --min_agreement"
        elif not candidate.passed:
            f["result"] = f"accuracy moved {f['accuracy_change'] * 100:+.2f} pt, past --max_accuracy_change"
        else:
            f["result"] = "meets --min_agreement"
        self.steps.step(f"int8 {recipe.name}: agreement {f['agreement']:.2%}, {f['texts_per_s']} texts/s ({f['speedup']}x fp32)")
        self._check_time()
        return candidate

    def run(self) -> Candidate:
        """Try the tiers in order; return the chosen candidate or raise ValidationError with the table."""
        options = self.options
        static = bool(self.calibration.examples)
        dynamic = Int8Recipe("dynamic", options.quantize_ops, options.per_channel)
        if options.quantize_method == "dynamic":
            tiers = [[dynamic]]
        elif options.quantize_method == "static":
            tiers = [[Int8Recipe("static", options.quantize_ops, True, method) for method in self._methods()]]
        else:
            tiers = [[dynamic] + ([] if options.per_channel else [Int8Recipe("dynamic", options.quantize_ops, True)])
                     + ([Int8Recipe("static", options.quantize_ops, True, m) for m in self._methods()] if static else [])]
        tier_number = 0
        while tier_number < len(tiers) or (options.quantize_method == "auto" and self._extend(tiers)):
            tier_number += 1
            tried = [self.try_recipe(recipe, tier_number) for recipe in tiers[tier_number - 1]]
            passing = [candidate for candidate in tried if candidate.passed]
            if passing:
                # Fastest by the ratio to fp32 timed in the same rounds: absolute texts/s of candidates
                # measured minutes apart on a shared machine compare the machine's load, not the files.
                chosen = max(passing, key=lambda candidate: candidate.figures["speedup"])
                chosen.figures["result"] = "chosen: fastest of its tier meeting --min_agreement"
                return chosen
        raise ValidationError(
            f"no int8 candidate agrees with fp32 on at least {options.min_agreement:.2%} of the {len(self.meter.texts)} "
            f"held-out texts ({self.measure_name}) while keeping accuracy within --max_accuracy_change "
            f"{options.max_accuracy_change:g}; nothing was written. Serve the fp32/optimised file (omit --quantize), "
            "give --calibration_file with more representative texts, or lower --min_agreement after checking the "
            f"accuracy below.\n{format_table(self.candidates, self.measure_name)}"
        )

    def _extend(self, tiers: list[list[Int8Recipe]]) -> bool:
        """Add the next, more conservative tier after the last one failed; False when none is left."""
        statics = [c for c in self.candidates if c.recipe.method == "static" and not c.recipe.nodes_excluded]
        if len(tiers) == 1 and self.options.quantize_ops == "all":  # tier 2: the MatMuls only, embedding tables fp32
            tier = [Int8Recipe("dynamic", "matmul", True)]
            if statics:
                best = max(statics, key=lambda c: c.figures["agreement"])
                tier.insert(0, Int8Recipe("static", "matmul", True, best.recipe.calibration))
            tiers.append(tier)
            return True
        if not statics:  # the nodes are ranked on a calibrated QDQ model: none without calibration texts
            return False
        # Then: the best static model (matmul-only preferred) and per-channel dynamic int8, each with
        # the worst nodes kept fp32, EXCLUDE_STEP more per round.
        base = max(statics, key=lambda c: (c.recipe.quantize_ops == "matmul", c.figures["agreement"]))
        if self.exclude_rounds >= MAX_EXCLUDE_ROUNDS:
            return False
        if self.ranked_nodes is None:
            self.steps.step(f"ranking the quantised nodes of {base.recipe.name} by int8 error (onnxruntime qdq_loss_debug)")
            self.ranked_nodes = rank_nodes_by_error(self.fp32_path, base.path, self.tokenizer, self.calibration.examples,
                                                    self.input_names, self.scratch_dir, base.recipe.operators())
        excluded = tuple(entry["node"] for entry in self.ranked_nodes[: (self.exclude_rounds + 1) * EXCLUDE_STEP])
        if len(excluded) <= self.exclude_rounds * EXCLUDE_STEP:  # every ranked node is already excluded
            return False
        self.exclude_rounds += 1
        tiers.append([Int8Recipe("dynamic", self.options.quantize_ops, True, None, excluded),
                      Int8Recipe("static", base.recipe.quantize_ops, True, base.recipe.calibration, excluded)])
        return True

    def finish(self, chosen: Candidate, validation_source: str) -> tuple[dict, dict]:
        """Move the chosen file into place; return (its manifest quantization record, the search record)."""
        from jbert.serve.runtime.cpu import cpu_description

        chosen.path.replace(self.work_dir / QUANTIZED_FILE)
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
        calibration = self.calibration.record() if chosen.recipe.method == "static" else None
        record = quantize.quantization_record(self.target, chosen.recipe, self.reduce_range, calibration)
        record["target_source"] = self.target_source
        record["speedup_vs_fp32"] = chosen.figures["speedup"]
        search = {
            "target": self.target,
            "target_source": self.target_source,
            "cpu": cpu_description(),
            "method": self.options.quantize_method,
            "min_agreement": self.options.min_agreement,
            "max_accuracy_change": self.options.max_accuracy_change,
            "agreement_measure": self.measure_name,
            "held_out": {"source": validation_source, "n_texts": len(self.meter.texts),
                         "n_labelled": sum(label is not None for label in self.meter.labels)},
            "calibration": self.calibration.record(),
            "timing": {"runtime": "jbert.serve.runtime.OnnxClassifier (encode, run_logits, postprocess)",
                       "texts": min(len(self.meter.texts), TIMING_TEXTS), "rounds": TIMING_ROUNDS, "best_of_rounds": True,
                       "intra_op_threads": self.meter.threads},
            "candidates": [candidate.figures for candidate in self.candidates],
            "chosen": chosen.recipe.name,
            "speedup_vs_fp32": chosen.figures["speedup"],
            "search_seconds": round(time.perf_counter() - self.started, 1),
        }
        if self.ranked_nodes:
            search["node_errors"] = self.ranked_nodes[: MAX_EXCLUDE_ROUNDS * EXCLUDE_STEP]
        return record, search


def search_int8(work_dir: Path, info: ModelDirInfo, tokenizer, examples: Sequence[ValidationExample], validation_source: str,
                calibration: Optional[CalibrationTexts], options: ExportOptions, steps: StepLog) -> tuple[dict, dict]:
    """Make model_quantized.onnx in WORK_DIR with the fastest recipe that meets --min_agreement.

    Returns (the int8 file's quantization record, the search record with every candidate's figures).
    Raises ValidationError (with the table) when no candidate meets it, UserError when the search
    runs past --max_quantize_seconds or static int8 has no calibration texts.
    """
    search = Int8Search(work_dir, info, tokenizer, examples, calibration, options, steps)
    chosen = search.run()
    if options.show_progress:
        print(format_table(search.candidates, search.measure_name), flush=True, file=sys.stderr)
    return search.finish(chosen, validation_source)
