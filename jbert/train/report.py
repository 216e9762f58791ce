"""What a finished run leaves for people: PNG plots and the model card (README.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jbert.core.artifacts import JbertSettings


def _cjk_font_available() -> bool:
    try:
        import matplotlib_fontja  # noqa: F401  (registers and selects IPAexGothic)

        return True
    except ImportError:
        from matplotlib import font_manager

        names = {font.name for font in font_manager.fontManager.ttflist}
        return any(key in name for name in names for key in ("CJK", "IPA", "Takao", "Hiragino", "Yu Gothic", "Meiryo"))


def _tick_labels(label_names: list[str], japanese_font: bool) -> list[str]:
    # Without a Japanese font matplotlib draws empty boxes; fall back to ids (the card maps them).
    if japanese_font or all(name.isascii() for name in label_names):
        return label_names
    return [str(i) for i in range(len(label_names))]


def write_plots(output_dir: Path, history: list[dict], best_metric: str, confusion: list | None,
                label_names: list[str]) -> list[str]:
    """Loss curve, metric curve and confusion matrix as PNG files; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    japanese_font = _cjk_font_available()
    written = []
    train_points = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    eval_points = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, axis = plt.subplots(figsize=(6, 4))
    if train_points:
        axis.plot(*zip(*train_points), label="train loss")
    if eval_points:
        axis.plot(*zip(*eval_points), marker="o", label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.legend()
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(output_dir / "loss.png", dpi=100)
    plt.close(fig)
    written.append("loss.png")

    metric_points = [(h["step"], h[f"eval_{best_metric}"]) for h in history if f"eval_{best_metric}" in h]
    if metric_points:
        fig, axis = plt.subplots(figsize=(6, 4))
        axis.plot(*zip(*metric_points), marker="o")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(f"validation {best_metric}")
        axis.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(output_dir / "metric.png", dpi=100)
        plt.close(fig)
        written.append("metric.png")

    if confusion:
        ticks = _tick_labels(label_names, japanese_font)
        size = max(4, 0.6 * len(ticks) + 2)
        fig, axis = plt.subplots(figsize=(size, size))
        image = axis.imshow(confusion, cmap="Blues")
        axis.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right")
        axis.set_yticks(range(len(ticks)), ticks)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        peak = max(max(row) for row in confusion) or 1
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                axis.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
        fig.colorbar(image, ax=axis, fraction=0.046)
        fig.tight_layout()
        fig.savefig(output_dir / "confusion_matrix.png", dpi=100)
        plt.close(fig)
        written.append("confusion_matrix.png")
    return written


def _metric_rows(metrics: dict) -> list[str]:
    return [f"| {table_cell(key)} | {value:.4f} |" for key, value in metrics.items() if isinstance(value, (int, float))]


# Characters that end a line for Markdown renderers or for str.splitlines() beyond the ASCII
# controls json.dumps already escapes.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def table_cell(text: object) -> str:
    """`text` as one Markdown table cell: line breaks and control characters escaped as in JSON
    (a newline shows as \\n), `|` as \\|, `<` as &lt; (no HTML from a label name)."""
    escaped = json.dumps(str(text), ensure_ascii=False)[1:-1].replace('\\"', '"')  # quotes need no escape
    for char, replacement in _LINE_BREAKS.items():
        escaped = escaped.replace(char, replacement)
    return escaped.replace("|", "\\|").replace("<", "&lt;")


def fenced(language: str, text: str) -> list[str]:
    """A fenced code block whose fence is longer than any run of backticks inside `text`."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, text, fence]


def write_model_card(output_dir: Path, *, name: str, model_source: str, settings: JbertSettings, label_names: list[str],
                     data_summary: dict, validation_metrics: dict, test_metrics: dict | None,
                     best: dict, plots: list[str], config: dict, extra_sections: list[str] | None = None) -> None:
    """README.md of the model directory: data, labels, metrics and how to load it.

    `extra_sections` (markdown lines, e.g. the baseline comparison) go right after the metrics.
    """
    problem_text = {
        "single_label_classification": "single-label classification",
        "multi_label_classification": "multi-label classification (sigmoid, threshold "
        f"{settings.multi_label_threshold})",
        "regression": "regression",
    }[settings.problem_type]
    pair_text = f" of sentence pairs (`{settings.text_column}`, `{settings.text_pair_column}`)" if settings.is_pair else ""
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "language: ja",
        "tags: [jbert, text-classification]",
        "---",
        "",
        f"# {name}",
        "",
        f"Japanese text classifier ({problem_text}{pair_text}) fine-tuned with jbert from `{model_source}`.",
        "",
        "## Labels",
        "",
    ]
    if label_names:
        lines += ["| id | label |", "| --- | --- |"] + [f"| {i} | {table_cell(name)} |" for i, name in enumerate(label_names)]
    else:
        lines.append("Regression: one real-valued output.")
    lines += ["", "## Data", ""] + fenced("json", json.dumps(data_summary, ensure_ascii=False, indent=2)) + [""]
    lines += [f"## Validation metrics (best checkpoint: step {best.get('step')}, {best.get('metric')} = "
              f"{best.get('value', float('nan')):.4f})", "", "| metric | value |", "| --- | --- |"]
    lines += _metric_rows(validation_metrics)
    if test_metrics:
        lines += ["", "## Test metrics", "", "| metric | value |", "| --- | --- |"] + _metric_rows(test_metrics)
    lines += extra_sections or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    lines += [
        "",
        "## How to use",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForSequenceClassification.from_pretrained("{name}")',
        "```",
        "",
        "Texts are cleaned before tokenisation with the settings in `jbert.json` "
        f"({settings.normalization.to_dict()}); `jbert` applies them automatically in export and serving:",
        "",
        "```bash",
        f"python export.py {name} {name}-onnx --quantize avx2",
        f"python serve_onnx.py score {name}-onnx input.csv scored.jsonl",
        "```",
        "",
        "## Training configuration",
        "",
    ]
    import yaml

    lines += fenced("yaml", yaml.safe_dump(config, allow_unicode=True, sort_keys=False).rstrip()) + [""]
    (output_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def write_perplexity_plot(output_dir: Path, history: list[dict]) -> list[str]:
    """Masked-LM curves: training loss and validation perplexity per step; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_points = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    eval_points = [(h["step"], h["eval_perplexity"]) for h in history if "eval_perplexity" in h]
    fig, (loss_axis, perplexity_axis) = plt.subplots(1, 2, figsize=(10, 4))
    if train_points:
        loss_axis.plot(*zip(*train_points), label="train loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("masked-LM loss")
    loss_axis.grid(alpha=0.3)
    if eval_points:
        perplexity_axis.plot(*zip(*eval_points), marker="o")
        perplexity_axis.set_yscale("log")  # perplexity falls by orders of magnitude early on
    perplexity_axis.set_xlabel("optimizer step")
    perplexity_axis.set_ylabel("validation perplexity")
    perplexity_axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(output_dir / "perplexity.png", dpi=100)
    plt.close(fig)
    return ["perplexity.png"]


def write_mlm_card(output_dir: Path, *, name: str, model_source: str, metrics: dict, plots: list[str],
                   config: dict) -> None:
    """README.md of a masked-LM model directory: data, perplexity, and how to fine-tune it."""
    import yaml

    best = metrics["best"]
    validation = metrics["validation"]
    lines = [
        "---", "library_name: transformers", "pipeline_tag: fill-mask", "language: ja", "tags: [jbert, fill-mask]",
        "---", "", f"# {name}", "",
        f"Japanese BERT masked language model trained with jbert (whole-word masking over MeCab words) from "
        f"`{model_source}`.", "",
        "## Data", "", *fenced("json", json.dumps(metrics["data"], ensure_ascii=False, indent=2)), "",
        f"## Validation (best checkpoint: step {best['step']})", "", "| metric | value |", "| --- | --- |",
        f"| loss (masked tokens) | {validation['loss']:.4f} |",
        f"| perplexity | {validation['perplexity']:.2f} |",
        f"| perplexity at the first evaluation (step {metrics['first_evaluation']['step']}) | "
        f"{metrics['first_evaluation']['perplexity']:.2f} |",
    ]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{plot}]({plot})" for plot in plots]
    lines += [
        "", "## Fine-tune it", "",
        "A classifier starts from these weights with a fresh head:", "", "```bash",
        f"accelerate launch train.py --model_name_or_path {name} --train_file train.csv --output_dir {name}-classifier",
        "```", "", "## Training configuration", "",
        *fenced("yaml", yaml.safe_dump(config, allow_unicode=True, sort_keys=False).rstrip()), "",
    ]
    (output_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def insert_card_section(card: Path, lines: list[str]) -> None:
    """Put `lines` into a written model card before its "## How to use" (or "## Fine-tune it") heading.

    For sections every task's card shares (the hardware figures), written once by the model-directory
    writer instead of by each task's card; appended when neither heading is there; no card, no change.
    """
    if not lines or not card.is_file():
        return
    text = card.read_text(encoding="utf-8")
    section = "\n".join(lines).lstrip("\n") + "\n\n"
    for heading in ("\n## How to use\n", "\n## Fine-tune it\n"):
        if heading in text:
            at = text.index(heading) + 1
            card.write_text(text[:at] + section + text[at:], encoding="utf-8")
            return
    card.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
