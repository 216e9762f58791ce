"""Decision rules chosen on the validation set after training: per-label thresholds and abstention.

    multi-label    --multi_label_thresholds tuned (default): each label's sigmoid threshold is the one
                   that maximises that label's F1 on validation, or with --target_precision P the lowest
                   one whose predicted positives reach precision P; `global` keeps --multi_label_threshold
    single-label   --min_confidence P, or --target_precision P: the lowest confidence whose accepted
                   validation predictions reach precision P; below it serving answers "abstained"

The rule goes into jbert.json (JbertSettings.label_thresholds / min_confidence), from there into the
export and its manifest, and serving applies it with jbert.core.postprocessing's functions, the same
ones the test-file predictions here use. The figures (each label's threshold and F1 before/after;
the precision/coverage curve) go into metrics.json, the card and precision_coverage.png.

numpy only (matplotlib for the plot): the rules are plain functions of validation scores and labels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jbert.core.artifacts import JbertSettings
from jbert.core.errors import UserError
from jbert.core.postprocessing import abstentions, multi_label_decisions, sigmoid, softmax
from jbert.data.labels import MULTI_LABEL, SINGLE_LABEL
from jbert.train.config import TrainConfig
from jbert.train.model_writer import remove_working_files

logger = logging.getLogger("jbert")

# A label with fewer positive validation examples keeps the global threshold: an F1-optimal threshold
# chosen on a handful of positives is noise, and a wrong one silently mutes or floods that label.
MIN_POSITIVES_TO_TUNE = 5
CURVE_POINTS_KEPT = 50  # precision/coverage points in metrics.json (the PNG draws every one)
PLOT_FILE = "precision_coverage.png"
FEW_ACCEPTED = 20  # fewer accepted validation examples than this: the measured precision is a rough guess


# ------------------------------------------------------------------ multi-label: per-label thresholds


def _f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    true_positives = float(np.sum(predicted & truth))
    denominator = float(np.sum(predicted) + np.sum(truth))
    return 2 * true_positives / denominator if denominator else 0.0


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray, default: float) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `scores > threshold` against 0/1 `truth`.

    Candidates are the midpoints between consecutive distinct scores (a threshold in the gap, not on
    a seen score, so nearby unseen scores fall the same way) and `default`; among equal F1s the one
    nearest `default` wins, so a tie never moves a threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    distinct = np.unique(scores)
    candidates = np.concatenate([[default], (distinct[:-1] + distinct[1:]) / 2])
    candidates = candidates[(candidates > 0) & (candidates < 1)]
    best_threshold, best_f1 = default, _f1(scores > default, truth)
    for threshold in candidates:
        f1 = _f1(scores > threshold, truth)
        if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(threshold - default) < abs(best_threshold - default)):
            best_threshold, best_f1 = float(threshold), f1
    return best_threshold, best_f1


def lowest_threshold_for_precision(scores: np.ndarray, truth: np.ndarray, target: float) -> float | None:
    """The lowest threshold t (a midpoint between distinct scores) whose `scores > t` reach precision `target`.

    None when no threshold that predicts at least one positive reaches it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    distinct = np.unique(scores)
    candidates = (distinct[:-1] + distinct[1:]) / 2
    candidates = candidates[(candidates > 0) & (candidates < 1)]
    for threshold in np.sort(candidates):  # lowest first: the most positives kept
        predicted = scores > threshold
        if predicted.any() and float(np.mean(truth[predicted])) >= target - 1e-12:
            return float(threshold)
    return None


def tune_label_thresholds(probabilities: np.ndarray, labels: np.ndarray, label_names: list[str],
                          default: float, target_precision: float | None = None) -> dict:
    """Each label's F1-optimal validation threshold; labels with too few positives or no gain keep `default`.

    With `target_precision`, each label (with enough positives) gets the lowest threshold whose
    validation positives reach that precision instead; a label that no threshold brings there is a
    UserError naming it (nothing is written).

    Returns {"thresholds": {label: threshold}, "per_label": {label: {threshold, f1_before, f1_after,
    positives, tuned}}, "macro_f1_before", "macro_f1_after", "micro_f1_before", "micro_f1_after"}.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels) > 0.5
    thresholds, per_label, unreachable = {}, {}, []
    for index, name in enumerate(label_names):
        column, column_truth = probabilities[:, index], truth[:, index]
        f1_before = _f1(column > default, column_truth)
        positives = int(column_truth.sum())
        threshold, f1_after = default, f1_before
        if positives >= MIN_POSITIVES_TO_TUNE and target_precision is not None:
            found = lowest_threshold_for_precision(column, column_truth, target_precision)
            if found is None:
                unreachable.append(name)
            else:
                threshold, f1_after = found, _f1(column > found, column_truth)
        elif positives >= MIN_POSITIVES_TO_TUNE:
            threshold, f1_after = best_f1_threshold(column, column_truth, default)
        thresholds[name] = float(threshold)
        per_label[name] = {"threshold": float(threshold), "f1_before": f1_before, "f1_after": f1_after,
                           "positives": positives, "tuned": threshold != default}
    if unreachable:
        raise UserError(f"--target_precision {target_precision} is not reached on the validation set by any threshold "
                        f"for label(s) {unreachable}; nothing was written. Choose a lower --target_precision, use "
                        "the F1-tuned thresholds (drop --target_precision), or train a better model")
    before = multi_label_decisions(probabilities, default).astype(bool)
    after = multi_label_decisions(probabilities, np.array([thresholds[n] for n in label_names])).astype(bool)
    return {
        "thresholds": thresholds, "per_label": per_label, "default_threshold": default,
        "tuned_for": f"precision {target_precision}" if target_precision is not None else "F1",
        "min_positives_to_tune": MIN_POSITIVES_TO_TUNE,
        "macro_f1_before": float(np.mean([v["f1_before"] for v in per_label.values()])) if per_label else 0.0,
        "macro_f1_after": float(np.mean([v["f1_after"] for v in per_label.values()])) if per_label else 0.0,
        "micro_f1_before": _f1(before, truth), "micro_f1_after": _f1(after, truth),
    }


# ------------------------------------------------------------------ single-label: abstention


def precision_coverage_curve(top_scores: np.ndarray, correct: np.ndarray) -> dict:
    """Accepting `top_score >= t` for every distinct top score t (highest first): precision and coverage.

    Returns {"thresholds", "precision", "coverage", "accepted"} as numpy arrays of equal length.
    """
    top_scores = np.asarray(top_scores, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    order = np.argsort(-top_scores, kind="stable")
    sorted_scores, sorted_correct = top_scores[order], correct[order]
    # the last position of each run of equal scores: accepting >= t takes the whole run
    run_ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    accepted = run_ends + 1
    hits = np.cumsum(sorted_correct)[run_ends]
    return {"thresholds": sorted_scores[run_ends], "precision": hits / accepted,
            "coverage": accepted / max(len(top_scores), 1), "accepted": accepted}


def threshold_for_precision(curve: dict, target: float) -> float | None:
    """The smallest threshold whose accepted predictions reach `target` precision, or None if none does."""
    reaching = np.flatnonzero(curve["precision"] >= target - 1e-12)
    if not len(reaching):
        return None
    return float(curve["thresholds"][reaching[-1]])  # thresholds fall along the curve: the last is the smallest


def selective_figures(probabilities: np.ndarray, labels: np.ndarray, min_confidence: float) -> dict:
    """Coverage, precision of the accepted predictions and counts under `min_confidence` (softmax rows)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    accepted = ~abstentions(probabilities, min_confidence)
    correct = probabilities.argmax(axis=-1) == np.asarray(labels).astype(np.int64)
    count = int(accepted.sum())
    return {"min_confidence": float(min_confidence), "coverage": count / max(len(accepted), 1),
            "precision": float(correct[accepted].mean()) if count else None, "accepted": count,
            "abstained": int(len(accepted) - count), "accuracy_without_abstention": float(correct.mean()) if len(correct) else None}


def choose_abstention(probabilities: np.ndarray, labels: np.ndarray, min_confidence: float | None,
                      target_precision: float | None) -> dict:
    """The abstention rule and its validation figures; UserError when `target_precision` is out of reach."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    top_scores = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == np.asarray(labels).astype(np.int64)
    curve = precision_coverage_curve(top_scores, correct)
    if target_precision is not None:
        min_confidence = threshold_for_precision(curve, target_precision)
        if min_confidence is None:
            best = float(curve["precision"].max()) if len(curve["precision"]) else 0.0
            raise UserError(
                f"--target_precision {target_precision} is not reached on the validation set by any confidence "
                f"threshold (the best precision of the accepted predictions is {best:.4f}, "
                f"accuracy {float(correct.mean()):.4f}); nothing was written. Choose a lower --target_precision, "
                "give --min_confidence directly, or train a better model")
    figures = selective_figures(probabilities, labels, min_confidence)
    if figures["accepted"] < FEW_ACCEPTED:
        logger.warning("abstention at min_confidence %.4f accepts only %d validation examples: its precision "
                       "is a rough estimate", min_confidence, figures["accepted"])
    keep = np.unique(np.linspace(0, len(curve["thresholds"]) - 1, min(CURVE_POINTS_KEPT, len(curve["thresholds"])))
                     .round().astype(int)) if len(curve["thresholds"]) else np.array([], dtype=int)
    points = [{"threshold": float(curve["thresholds"][i]), "precision": float(curve["precision"][i]),
               "coverage": float(curve["coverage"][i])} for i in keep]
    return {"rule": "target_precision" if target_precision is not None else "min_confidence",
            "target_precision": target_precision, "validation": figures, "curve": points, "_curve": curve}


def plot_precision_coverage(path: Path, curve: dict, min_confidence: float, figures: dict) -> None:
    """precision_coverage.png: precision of accepted predictions against coverage, the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot(curve["coverage"], curve["precision"], label="validation")
    if figures["precision"] is not None:
        axis.plot([figures["coverage"]], [figures["precision"]], marker="o", color="C3",
                  label=f"min_confidence {min_confidence:.3f}")
    axis.set_xlabel("coverage (share of inputs answered)")
    axis.set_ylabel("precision of answered inputs")
    axis.set_xlim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ the report


def decision_card_lines(decision: dict) -> list[str]:
    """Model-card markdown for the decision rule: per-label thresholds or abstention figures."""
    from jbert.train.report import table_cell

    lines: list[str] = []
    if "label_thresholds" in decision:
        tuned = decision["label_thresholds"]
        lines += ["## Per-label thresholds", "",
                  f"Tuned on the validation set for each label's {tuned.get('tuned_for', 'F1')} (labels with fewer than "
                  f"{tuned['min_positives_to_tune']} positive validation examples, or no gain, keep "
                  f"{tuned['default_threshold']}). Validation F1 after tuning is optimistic: the test figures are not.",
                  "", "| label | threshold | validation F1 before | after | positives |", "|---|---|---|---|---|"]
        for name, row in tuned["per_label"].items():
            lines.append(f"| {table_cell(name)} | {row['threshold']:.4f} | {row['f1_before']:.4f} | "
                         f"{row['f1_after']:.4f} | {row['positives']} |")
        lines += ["", f"Micro F1 {tuned['micro_f1_before']:.4f} -> {tuned['micro_f1_after']:.4f}, "
                      f"macro F1 {tuned['macro_f1_before']:.4f} -> {tuned['macro_f1_after']:.4f}.", ""]
    if "abstention" in decision:
        rule, figures = decision["abstention"], decision["abstention"]["validation"]
        how = (f"the lowest confidence whose accepted validation predictions reach precision {rule['target_precision']}"
               if rule["rule"] == "target_precision" else "given with --min_confidence")
        precision = "n/a" if figures["precision"] is None else f"{figures['precision']:.4f}"
        lines += ["## Abstention", "",
                  f"Inputs whose top score is below **{figures['min_confidence']:.4f}** ({how}) are answered "
                  "`abstained` (HTTP /v1/predict, batch scoring): send them to a person.", "",
                  f"On validation: coverage {figures['coverage']:.4f} ({figures['accepted']} answered, "
                  f"{figures['abstained']} abstained), precision of the answered {precision} "
                  f"(accuracy without abstention {figures['accuracy_without_abstention']:.4f}).", "",
                  f"![precision and coverage]({PLOT_FILE})", ""]
    return lines


# ------------------------------------------------------------------ the training run's side


def check_decision_options(config: TrainConfig, problem_type: str, settings: JbertSettings) -> None:
    """Abstention needs single-label data (known only once --task auto has looked); a given --min_confidence is stored.

    --target_precision also applies to multi-label data with tuned per-label thresholds.
    """
    if config.min_confidence is not None and problem_type != SINGLE_LABEL:
        raise UserError(f"--min_confidence applies to single-label classification; this data is {problem_type}")
    if config.target_precision is not None and problem_type not in (SINGLE_LABEL, MULTI_LABEL):
        raise UserError(f"--target_precision applies to single-label and multi-label classification; "
                        f"this data is {problem_type}")
    if config.target_precision is not None and problem_type == MULTI_LABEL and config.multi_label_thresholds != "tuned":
        raise UserError("--target_precision on multi-label data tunes each label's threshold: it needs "
                        "--multi_label_thresholds tuned (the default), not global")
    settings.min_confidence = config.min_confidence


def rule_wanted(config: TrainConfig, problem_type: str) -> bool:
    """True when the run asks for a rule chosen on validation scores (tuned thresholds or abstention)."""
    if problem_type == MULTI_LABEL:
        return config.multi_label_thresholds == "tuned"
    return problem_type == SINGLE_LABEL and (config.min_confidence is not None or config.target_precision is not None)


def choose_decision_rule(directory: Path, config: TrainConfig, settings: JbertSettings, prepared,
                         validation_logits: np.ndarray) -> dict:
    """Per-label thresholds or the abstention rule from the saved model's validation logits, into jbert.json.

    `directory`: the model directory being assembled (jbert.json rewritten, precision_coverage.png
    added); returns the figures for metrics.json. A --target_precision that no threshold reaches is
    a UserError: the caller's atomic directory is dropped, so nothing appears at --output_dir, and
    the best-weights working copy is removed too.
    """
    labels = np.asarray(prepared.validation["labels"])
    if prepared.problem_type == MULTI_LABEL:
        try:
            tuned = tune_label_thresholds(sigmoid(validation_logits), labels, prepared.label_names,
                                          config.multi_label_threshold, config.target_precision)
        except UserError:
            remove_working_files(config.checkpoint_dir)
            raise
        settings.label_thresholds = tuned["thresholds"]
        settings.save(directory)
        changed = [name for name, row in tuned["per_label"].items() if row["tuned"]]
        logger.info("per-label thresholds tuned on validation for %d of %d labels: micro F1 %.4f -> %.4f",
                    len(changed), len(prepared.label_names), tuned["micro_f1_before"], tuned["micro_f1_after"])
        return {"label_thresholds": tuned}
    try:
        rule = choose_abstention(softmax(validation_logits), labels, config.min_confidence, config.target_precision)
    except UserError:
        remove_working_files(config.checkpoint_dir)
        raise
    curve = rule.pop("_curve")
    settings.min_confidence = rule["validation"]["min_confidence"]
    settings.save(directory)
    plot_precision_coverage(directory / PLOT_FILE, curve, settings.min_confidence, rule["validation"])
    logger.info("abstention below confidence %.4f: validation coverage %.4f, precision %s",
                settings.min_confidence, rule["validation"]["coverage"], rule["validation"]["precision"])
    return {"abstention": rule}
