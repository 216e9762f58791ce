"""MkDocs hook: benchmark tables and plots from docs/data/*.json, and the package map from the code.

A page writes a marker such as `<!-- bench:export -->` or `<!-- bench:export:base -->`; the build
replaces it with a table made from docs/data/export.json and a line naming the command that
produced the figures and its date. Plots (`img/bench/NAME.png`) are drawn from the same files.
Rerun a benchmark with `--json-out docs/data/NAME.json` and the next build shows the new figures:
nobody edits numbers by hand. A marker without its data file, or a view that does not exist, stops
the build, so `mkdocs build --strict` in the tests catches it.

The reference and layout pages are drawn from the package itself, so splitting or renaming a
module never leaves a page pointing at a module that is gone: `<!-- reference:jbert.serve -->`
becomes one mkdocstrings block (`::: jbert.serve.runtime`, ...) per public module of that
sub-package, `<!-- layout:modules -->` a table of every module with its line count and the
first line of its docstring.
"""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

MARKER = re.compile(r"<!--\s*bench:(?P<name>[a-z_]+)(?::(?P<view>[a-z_]+))?\s*-->")
PLOT_DIR = "img/bench"


def _data_dir(config) -> Path:
    return Path(config["docs_dir"]) / "data"


def _load(config, name: str) -> dict:
    path = _data_dir(config) / f"{name}.json"
    if not path.is_file():
        raise PluginError(f"docs hook: a page asks for bench:{name} but {path} does not exist "
                          f"(run the benchmark with --json-out {path.relative_to(Path(config['docs_dir']).parent)})")
    return json.loads(path.read_text(encoding="utf-8"))


def _num(value, digits: int | None = None) -> str:
    """A figure as the docs print it: '-' when absent, thousands separators, ranges kept as text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3):
        return f"{value:.1e}"
    if digits is not None:
        return f"{value:,.{digits}f}"
    return f"{value:,}"  # a float keeps its written decimals (75.0 stays 75.0), an int gets separators


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # A "|" inside a cell (e.g. "max |logit diff|") would end the cell: escape it.
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _source(doc: dict) -> str:
    """The line under every table: command, date, commit, a link to the machine, whether transcribed."""
    line = f"*Measured with `{doc['command']}` on {doc['date']}"
    if doc.get("git_commit"):
        line += f" (commit `{doc['git_commit']}`)"
    # The machine is described once, in the table on the benchmarks page (all pages sit in docs/).
    line += " on [the benchmark machine](benchmarks.md#the-machine).*"
    if doc.get("transcribed"):
        line += " *Transcribed from the README of that day; rerun with `--json-out` to replace.*"
    if doc.get("note"):
        line += f"\n\n{doc['note']}"
    return line


# --- one renderer per benchmark (and view) -------------------------------------------------------

TRAIN_CONTENDERS = {"jbert": "jbert loop, fp32", "jbert_bf16": "jbert loop, bf16 autocast",
                    "trainer_default": "`Trainer` defaults, fp32", "trainer_group_by_length": "`Trainer` group_by_length, fp32",
                    "trainer_group_by_length_bf16": "`Trainer` group_by_length, bf16"}


def _train_throughput(result: dict, view: str | None) -> str:
    mean, runs = result["mean_over_seeds"], result["runs"]
    rows = []
    for key, figures in mean.items():
        per_seed = " / ".join(_num(run["samples_per_s"]) for run in runs[key])
        low, high = figures["test_accuracy_range"]
        rows.append([TRAIN_CONTENDERS.get(key, key), f"**{_num(figures['samples_per_s'])}**", per_seed,
                     _num(figures["tokens_per_s"], 0), _pct(figures["padding_share"]),
                     _num(figures["achieved_tflops_per_s"], 4), _pct(figures["mfu"]),
                     f"{_num(figures['test_accuracy'], 3)} ({_num(low, 3)}-{_num(high, 3)})"])
    header = ["", "samples/s (mean)", "per seed", "real tokens/s", "padding", "TFLOP/s", "MFU",
              "test accuracy (mean, range)"]
    ratios = ", ".join(f"{key.removeprefix('jbert_over_')} **{_num(value)}x**"
                       for key, value in result["throughput_ratios"].items() if key.startswith("jbert_over_"))
    bf16 = ", ".join(f"{key.removeprefix('bf16_over_fp32_')} {_num(value)}x"
                     for key, value in result["throughput_ratios"].items() if key.startswith("bf16_over_fp32_"))
    return (f"{result['model']}; {result['data']}; MFU against a measured CPU matmul peak "
            f"(fp32 {result['measured_cpu_peak_tflops']['float32']}, bf16 {result['measured_cpu_peak_tflops']['bfloat16']} "
            f"TFLOP/s, {result['torch_threads']} thread).\n\n" + _table(header, rows)
            + f"\n\nsamples/s of jbert (fp32) over: {ratios} (each over the seeds both ran). bf16 over fp32, same seeds: {bf16}.")


def _long_text(result: dict, view: str | None) -> str:
    trained = {"truncate": "truncated texts"}
    pooled = {"mean": "mean", "max": "max", "first": "first window"}
    rows = []
    for length, figures in result["lengths"].items():
        serving, served_windows = figures["serving"], figures["served_windows_model"]
        for name, arm in figures["arms"].items():
            readings = [("truncate", arm)] if name == "truncate" else [(pooling, arm[pooling]) for pooling in pooled]
            for reading, numbers in readings:
                served = (serving["truncate"] if name == "truncate"
                          else serving["windows"] if name == served_windows and reading == "mean" else {})
                how = (trained["truncate"] if name == "truncate" else
                       f"every window" if name.endswith("_all") else
                       f"whole texts, {name.rsplit('_', 1)[1]}-pooled loss" if "_document_" in name else
                       f"first {name.rsplit('_', 1)[1]} window(s)")
                rows.append([length, how, "first window (truncation)" if name == "truncate" else f"windows, {pooled[reading]}",
                             _num(numbers["test_accuracy"], 3), _num(numbers["test_macro_f1"], 3),
                             _num(numbers.get("accuracy_sentence_in_first_window"), 3),
                             _num(numbers.get("accuracy_sentence_past_first_window"), 3),
                             _num(served.get("texts_per_s")), _num(served.get("tokens_per_s")),
                             _pct(served.get("onnx_pytorch_label_agreement")) if served else ""])
    data = result["data"]
    late = ", ".join(f"{figures['test_documents_with_sentence_past_first_window']} at max_length {length}"
                     for length, figures in result["lengths"].items())
    intro = (f"{data['documents']['test']} test documents of about {data['characters_per_document']} characters "
             f"({data['label']}; the deciding sentence starts past the first window in {late}); "
             f"{result['size']} model from scratch, {result['epochs']} epochs, trained on "
             f"{data['documents']['train']} documents.")
    header = ["max_length", "trained on", "test reads", "accuracy", "macro-F1", "accuracy, sentence in first window",
              "accuracy, sentence past it", "texts/s (ONNX)", "tokens/s (ONNX)", "ONNX = PyTorch per document"]
    return intro + "\n\n" + _table(header, rows)


def _tokenizer(result: dict, view: str | None) -> str:
    ref = result["reference_texts_per_s"]
    rows = [
        ["`BertJapaneseTokenizer`", _num(ref), _num(result.get("reference_pairs_per_s"))],
        ["fast path, warm", f"{_num(result['fast_texts_per_s'])} (**{_num(result['speedup'])}x**)",
         f"{_num(result.get('fast_pairs_per_s'))} (**{_num(result.get('speedup_pairs'))}x**)"],
        ["fast path, cold cache", f"{_num(result['fast_cold_cache_texts_per_s'])} (**{_num(result['speedup_cold_cache'])}x**)", ""],
    ]
    intro = (f"{_num(result['texts'])} texts, {_num(result.get('pairs'))} pairs, vocabulary of "
             f"{_num(result['vocab_entries'])} entries, `max_length` {result['max_length']}, batches of "
             f"{result['batch_size']}; ids identical: **{_num(result['ids_identical'])}**.")
    return intro + "\n\n" + _table(["", "texts/s", "pairs/s"], rows)


def _scaling(result: dict, view: str | None) -> str:
    rows = []
    for name, mode in result["modes"].items():
        rows.append([name, f"`{mode['config'].rsplit('/', 1)[-1]}`", f"{mode['processes']} x {mode['per_device_batch']}",
                     _num(mode["train_samples_per_second"]), _num(mode["train_seconds"]), _num(mode["launch_wall_seconds"]),
                     _num(mode.get("throughput_vs_one_process")), _num(mode.get("throughput_vs_one_process_1thread")),
                     f"{mode['validation_loss']:.6f}"])
    header = ["mode", "config", "processes x batch", "samples/s (in loop)", "train s", "launch wall s",
              "vs 1 process", "vs 1 process, 1 thread", "validation loss"]
    intro = (f"{result['model']}, `max_length` {result['max_length']}, {result['epochs']} epochs, global batch "
             f"{result['global_batch']}, best of {result['runs_per_mode']} launches per mode; {result['machine']}.")
    return intro + "\n\n" + _table(header, rows)


def _export(result: dict, view: str | None) -> str:
    model_key = "base_shaped" if view == "base" else "minilm"
    if model_key not in result:
        raise PluginError(f"docs hook: export.json has no '{model_key}' results")
    rows = []
    for recipe, outcome in result[model_key]["exports"].items():
        if "validation_error" in outcome:
            rows.append([f"`{recipe}`", "-", "-", "-", f"**refused**: {outcome['validation_error']}", "-", "-", "-"])
            continue
        for key, figures in outcome["models"].items():
            agreement = _pct(figures.get("label_agreement"))
            if figures.get("label_disagreements"):
                agreement += f" ({figures['label_disagreements']} differ)"
            if figures.get("passes_default_min_agreement") is False:
                agreement += ", below the default 0.99"
            accuracy = figures.get(f"accuracy_{key}")
            compared_with = {"pytorch": "PyTorch"}.get(figures["compared_with"], figures["compared_with"])
            rows.append([f"`{recipe}`", f"`{figures['file']}`", f"{_num(figures['size_mb'])} MB", compared_with,
                         _num(figures["max_abs_diff"], None if abs(figures["max_abs_diff"]) < 1e-3 else 3), agreement,
                         _num(accuracy, 3), _num(figures.get("runtime_texts_per_s"))])
    header = ["recipe", "file", "size", "vs", "max abs logit diff", "label agreement", "accuracy", "runtime texts/s"]
    text = _table(header, rows)
    steps = [o.get("step_seconds") for o in result[model_key]["exports"].values() if o.get("step_seconds")]
    if steps:
        text += "\n\nExport steps (seconds): " + ", ".join(f"{k.replace('_', ' ')} {_num(v)}" for k, v in steps[0].items()) + "."
    if model_key == "minilm" and "training" in result["minilm"]:
        t = result["minilm"]["training"]
        held_out = t.get("validation_metrics") or {}  # the training run's validation set is the held-out test rows
        how = "a cached model" if t.get("cached") else (
            f"{t.get('steps')} steps of batch {t.get('batch_size')}, {_num(t.get('train_seconds'))} s")
        text = (f"MiniLM-L6 fine-tuned by jbert's loop ({how}; held-out accuracy {_num(held_out.get('accuracy'), 3)}, "
                f"macro-F1 {_num(held_out.get('macro_f1'), 3)}); data: {result['data']}.\n\n" + text)
    return text


INFERENCE_NAMES = {
    "pytorch_pipeline": "transformers `pipeline` on PyTorch fp32 (batch size 1)",
    "optimum_pipeline_fp32": "same pipeline, Optimum `ORTModelForSequenceClassification` fp32",
    "optimum_pipeline_int8": "same pipeline, Optimum int8",
    "jbert_runtime_fp32": "**jbert runtime fp32**",
    "jbert_runtime_int8": "**jbert runtime int8**",
    "tokenize_reference": "tokenisation: `BertJapaneseTokenizer`",
    "tokenize_fast": "tokenisation: `jbert.tokenization` fast path",
}


def _inference(result: dict, view: str | None) -> str:
    rows = []
    for key, figures in result["results"].items():
        rounds = figures.get("rounds_texts_per_s")
        rows.append([INFERENCE_NAMES.get(key, key), _num(figures["texts"]), f"**{_num(figures['texts_per_s'])}**",
                     " / ".join(_num(r) for r in rounds) if rounds else "-"])
    ratios = result["ratios"]
    text = _table(["contender", "texts", "texts/s (best round)", "per round"], rows)
    text += (f"\n\nRatios in the same run: jbert int8 = **{_num(ratios['jbert_int8_vs_pytorch_pipeline'])}x** the PyTorch "
             f"pipeline, **{_num(ratios['jbert_int8_vs_optimum_int8_pipeline'])}x** Optimum's int8 pipeline "
             f"; jbert fp32 = {_num(ratios['jbert_fp32_vs_optimum_fp32_pipeline'])}x Optimum's fp32 pipeline; "
             f"fast tokenizer = **{_num(ratios['fast_tokenizer_vs_reference'])}x** the reference. "
             f"Label agreement with PyTorch: " + ", ".join(f"{k} {_pct(v)}" for k, v in result["label_agreement_with_pytorch"].items()) + ".")
    data = result["data"]
    return (f"{result['model']}; {_num(data['texts'])} texts from {data['source']} (mean {data.get('mean_chars')} characters, "
            f"{data.get('mean_tokens')} tokens); the two slowest contenders on the first {_num(data['slow_texts'])}.\n\n" + text)


def _http_load(result: dict, view: str | None) -> str:
    rows = []
    for phase in ("clean", "mixed"):
        figures = result[phase]
        note = ""
        if phase == "mixed":
            note = (f"{_num(figures.get('malformed_requests'))} malformed requests, all answered 4xx: "
                    f"{_num(figures.get('malformed_all_4xx'))}")
        rows.append([phase, _num(figures["throughput_requests_per_s"]), f"{_num(figures['latency_ms']['p50'])} ms",
                     f"{_num(figures['latency_ms']['p99'])} ms", _num(figures["errors"]), note])
    server = result["server"]
    text = _table(["phase", "requests/s", "p50", "p99", "errors", "notes"], rows)
    text += (f"\n\nModel `{server['model']}`, `--max-wait-ms {server['max_wait_ms']}`; "
             f"{_num(server.get('mean_texts_per_model_call'))} texts per model call on average; server memory (VmRSS) "
             f"{_num(server.get('memory_idle', {}).get('rss_mib'))} MiB idle, "
             f"{_num(server.get('memory_after_load', {}).get('rss_mib'))} MiB after the load; "
             f"`/health` 200 afterwards: {_num(result.get('healthy_after_mixed'))}.")
    return text


def _quickstart(result: dict, view: str | None) -> str:
    test, validation = result["test"], result["validation"]
    rows = [["validation", _num(validation["accuracy"], 3), _num(validation["macro_f1"], 3)],
            ["test", _num(test["accuracy"], 3), _num(test["macro_f1"], 3)]]
    text = _table(["split", "accuracy", "macro-F1"], rows)
    text += (f"\n\n{result['global_step']} optimizer steps, {_num(result['train_seconds'], 1)} s in the loop "
             f"({_num(result['train_samples_per_second'], 0)} samples/s); best {result['best_metric']} "
             f"{_num(result['best']['value'], 3)} at step {result['best']['step']}.")
    return text


QUALITY_ARMS = {
    "baseline": "TF-IDF char 1-3 grams + logistic regression",
    "scratch": "BERT from scratch, recipe defaults",
    "mlm": "masked-LM on the unlabeled texts, then fine-tune (offline recipe)",
    "hp": "the offline recipe, fine-tuning settings from --hp_search",
}


def _quality(result: dict, view: str | None) -> str:
    """bench/quality.py: one table per data set, test accuracy / macro-F1 / seconds per arm."""
    parts = []
    for name, dataset in result["datasets"].items():
        if view and name != view:
            continue
        rows = []
        for arm, figures in dataset["arms"].items():
            base, _, variant = arm.partition("@")  # "mlm@fine-tune capped at 2 epochs": a variant of an arm
            label = QUALITY_ARMS.get(base, base) + (f" ({variant})" if variant else "")
            accuracy = _num(figures["test_accuracy"], 3)
            if "seeds" in figures:  # a fine-tuning arm run with several seeds: the mean, then the spread
                accuracy += (f" ({len(figures['seeds'])} seeds: {_num(figures['test_accuracy_min'], 3)}"
                             f"-{_num(figures['test_accuracy_max'], 3)})")
            rows.append([label, accuracy, _num(figures["test_macro_f1"], 3), _num(figures["seconds"], 0)])
        data = dataset["data"]
        text = f"**{name}** (train {_num(data['train'])}, validation {_num(data['validation'])}, test {_num(data['test'])})\n\n"
        text += _table(["model", "test accuracy", "test macro-F1", "seconds"], rows)
        pretraining = dataset.get("mlm_pretraining")
        if pretraining:
            text += (f"\n\nMasked-LM pretraining: {_num(pretraining['steps'])} steps, validation perplexity "
                     f"{_num(pretraining['perplexity_before_training'], 0)} before, "
                     f"{_num(pretraining['validation_perplexity'], 1)} after (its seconds are in the rows that use it).")
        parts.append(text)
    if not parts:
        raise KeyError(f"no data set {view!r} in the quality results")
    return "\n\n".join(parts)


RENDERERS = {
    "quality": _quality,
    "train_throughput": _train_throughput,
    "tokenizer": _tokenizer,
    "scaling": _scaling,
    "export": _export,
    "inference": _inference,
    "http_load": _http_load,
    "quickstart": _quickstart,
    "long_text": _long_text,
    "long_text_512": _long_text,  # the same benchmark at max_length 512, a run of its own (longer documents)
}


def render(config, name: str, view: str | None) -> str:
    """The Markdown that replaces `<!-- bench:NAME[:VIEW] -->`."""
    if name not in RENDERERS:
        raise PluginError(f"docs hook: unknown benchmark marker bench:{name} (known: {', '.join(RENDERERS)})")
    doc = _load(config, name)
    try:
        body = RENDERERS[name](doc["result"], view)
    except (KeyError, TypeError) as err:
        raise PluginError(f"docs hook: docs/data/{name}.json lacks a figure the page shows: {err!r}") from err
    return body + "\n\n" + _source(doc)


# --- the package, read from the code --------------------------------------------------------------

REFERENCE = re.compile(r"<!--\s*reference:(?P<package>jbert(?:\.[a-z_]+)*)\s*-->")
FLOW = ["core", "tokenization", "data", "train", "export", "serve"]  # the order data moves through the stages
LAYOUT = re.compile(r"<!--\s*layout:modules\s*-->")
ROOMS = re.compile(r"<!--\s*layout:rooms\s*-->")
ROOMS_PLOT = "img/layout/rooms.png"


def _import_graph():
    """docs/import_graph.py, loaded by path: mkdocs loads this hook file alone, not as a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("jbert_docs_import_graph", Path(__file__).with_name("import_graph.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rooms(config) -> str:
    """The drawing of the rooms and, below it, the same arrows as a table (searchable, diffable)."""
    arrows = _import_graph().room_imports(_repo_root(config) / "jbert")
    rows = [[f"`{room}`", ", ".join(f"`{t}`" for t in sorted(targets)) or "nothing"] for room, targets in sorted(arrows.items())]
    return f"![Rooms of the package and their imports]({ROOMS_PLOT})\n\n" + _table(["room", "imports"], rows)


def _repo_root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _modules(config, package: str) -> list[tuple[str, Path]]:
    """(dotted name, path) of the public modules under a package, sub-packages included, in file order."""
    folder = _repo_root(config).joinpath(*package.split("."))
    if not (folder / "__init__.py").is_file():
        raise PluginError(f"docs hook: {package} is not a package ({folder} has no __init__.py)")
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(_repo_root(config)).with_suffix("").parts
        if any(part.startswith("_") for part in parts if part != "__init__"):
            continue
        if parts[-1] == "__init__":
            if path.parent == folder:
                continue
            parts = parts[:-1]
        found.append((".".join(parts), path))
    # In the order the package docstring introduces its modules (the flow), the rest after.
    intro = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""
    # Its indented module list ("    runtime   OnnxClassifier: ...") first, else the first mention.
    words = re.findall(r"^\s+([a-z_]+)\s", intro, flags=re.MULTILINE) + re.findall(r"[a-z_]+", intro)

    def position(entry):
        short = entry[0][len(package) + 1:].split(".")[0]
        return (words.index(short) if short in words else len(words), entry[0])

    return sorted(found, key=position)


def _first_doc_line(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def _reference(config, package: str) -> str:
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false"]
    for name, _ in _modules(config, package):
        blocks.append(f"::: {name}")
    return "\n\n".join(blocks)


def _layout(config) -> str:
    root = _repo_root(config)
    rows = []
    def flow_position(init: Path):
        name = init.parent.name
        return (FLOW.index(name) if name in FLOW else len(FLOW), name)

    for init in sorted((root / "jbert").glob("*/__init__.py"), key=flow_position):
        package = f"jbert.{init.parent.name}"
        rows.append([f"**`{package}`**", "", _first_doc_line(init).replace("|", "\\|")])
        for name, path in _modules(config, package):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            rows.append([f"`{name}`", str(lines), _first_doc_line(path).replace("|", "\\|")])
    return _table(["module", "lines", "what it is (first line of its docstring)"], rows)


# --- figures written in the text, checked against their JSON ---------------------------------------

# A figure written by hand (in the README, which no build renders, or in a sentence of a page) carries
# a marker right after it: `**3.44x**<!-- figure:inference/ratios/jbert_int8_vs_optimum_int8_pipeline -->`.
# The marker names docs/data/NAME.json and the path to the value inside its "result"; a trailing `%`
# says the text shows the fraction as a percentage. The written figure must equal the JSON value
# rounded to the decimals written, so a rerun benchmark that moves the figure fails the build and
# tests/test_docs.py until the sentence is updated.
FIGURE = re.compile(r"<!--\s*figure:(?P<name>[a-z0-9_]+)/(?P<path>[^<>]+?)(?P<percent>\s+%)?\s*-->")
WRITTEN_NUMBER = re.compile(r"(?P<number>\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)[^\d<>]{0,12}$")


def _lookup(document: dict, path: str):
    """The value at a '/'-separated path inside a JSON document ('candidates/1/speedup')."""
    value = document
    for key in path.split("/"):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _as_written(value: float, written: str) -> str:
    """The value rounded and printed the way `written` prints its figure (decimals, exponent, commas)."""
    if "e" in written:
        mantissa = written.split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return f"{value:.{decimals}e}"
    decimals = len(written.split(".")[1]) if "." in written else 0
    return f"{value:,.{decimals}f}" if "," in written else f"{value:.{decimals}f}"


def figure_problems(markdown: str, data_dir: Path) -> list[str]:
    """Every `<!-- figure:... -->` marker whose written figure differs from its JSON value, as messages."""
    problems = []
    for marker in FIGURE.finditer(markdown):
        where = f"figure:{marker.group('name')}/{marker.group('path')}"
        written = WRITTEN_NUMBER.search(markdown[max(0, marker.start() - 40):marker.start()])
        if not written:
            problems.append(f"{where}: no figure written right before the marker")
            continue
        path = data_dir / f"{marker.group('name')}.json"
        try:
            value = _lookup(json.loads(path.read_text(encoding="utf-8"))["result"], marker.group("path"))
        except (OSError, KeyError, IndexError, ValueError, TypeError) as err:
            problems.append(f"{where}: {path.name} has no such value ({err!r})")
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{where}: {value!r} in {path.name} is not a number")
            continue
        number = written.group("number")
        expected = _as_written(100 * value if marker.group("percent") else value, number)
        if expected != number:
            problems.append(f"{where}: the text says {number}, {path.name} says {expected}")
    return problems


def figure_markers(markdown: str) -> int:
    """How many figure markers a text carries (the README test asks for its headline figures)."""
    return len(FIGURE.findall(markdown))


# --- the machine each benchmark ran on, as its JSON recorded it ---------------------------------------

MACHINES = re.compile(r"<!--\s*machines\s*-->")


def _machine_text(doc: dict) -> str:
    """The machine description a data file carries: the hand-written one, then what the script read."""
    parts = []
    if isinstance(doc.get("machine"), str):
        parts.append(doc["machine"])
    recorded = (doc.get("result") or {}).get("machine")
    if isinstance(recorded, dict):
        recorded = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in recorded.items()
                             if value is not None and not isinstance(value, (list, dict)))
    if recorded:
        parts.append(f"recorded by the script: {recorded}")
    return "; ".join(parts) or "-"


def _machines(config) -> str:
    rows = []
    for path in sorted(_data_dir(config).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows.append([f"`{path.name}`", doc["date"], _machine_text(doc)])
    return _table(["data file", "date", "machine"], rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    problems = figure_problems(markdown, _data_dir(config))
    if problems:
        raise PluginError(f"docs hook: {page.file.src_path}: written figures differ from docs/data: " + "; ".join(problems))
    markdown = MACHINES.sub(lambda m: _machines(config), markdown)
    markdown = MARKER.sub(lambda m: render(config, m.group("name"), m.group("view")), markdown)
    markdown = REFERENCE.sub(lambda m: _reference(config, m.group("package")), markdown)
    markdown = ROOMS.sub(lambda m: _rooms(config), markdown)
    return LAYOUT.sub(lambda m: _layout(config), markdown)


# --- plots -----------------------------------------------------------------------------------------

def _bars(title: str, labels: list[str], values: list[float], unit: str, log: bool = False, doc: dict | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.4), dpi=100)
    colours = ["#c0392b" if "jbert" in label else "#7f8c8d" for label in labels]
    axes.barh(labels[::-1], values[::-1], color=colours[::-1])
    if log:
        axes.set_xscale("log")
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f" {value:,.4g}", va="center", fontsize=8)
    axes.set_xlabel(unit)
    axes.set_title(title, fontsize=10)
    if doc:
        figure.text(0.01, 0.01, f"{doc['command']} - {doc['date']}", fontsize=7, color="#555555")
    axes.margins(x=0.18)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _plots(config) -> dict[str, bytes]:
    plots = {}
    data = _data_dir(config)
    if (data / "inference.json").is_file():
        doc = _load(config, "inference")
        results = {k: v for k, v in doc["result"]["results"].items() if not k.startswith("tokenize")}
        names = {"pytorch_pipeline": "PyTorch pipeline", "optimum_pipeline_fp32": "Optimum pipeline fp32",
                 "optimum_pipeline_int8": "Optimum pipeline int8", "jbert_runtime_fp32": "jbert runtime fp32",
                 "jbert_runtime_int8": "jbert runtime int8"}
        cpus = (doc["result"].get("machine") or {}).get("logical_cpus")
        plots["inference"] = _bars(f"Inference, base-shaped Japanese BERT, {cpus} CPU cores", [names.get(k, k) for k in results],
                                   [v["texts_per_s"] for v in results.values()], "texts/s (log scale)", log=True, doc=doc)
    if (data / "tokenizer.json").is_file():
        doc = _load(config, "tokenizer")
        r = doc["result"]
        plots["tokenizer"] = _bars("Tokenisation alone, JRTE texts", ["BertJapaneseTokenizer", "jbert fast, cold cache", "jbert fast, warm"],
                                   [r["reference_texts_per_s"], r["fast_cold_cache_texts_per_s"], r["fast_texts_per_s"]], "texts/s", doc=doc)
    if (data / "train_throughput.json").is_file():
        doc = _load(config, "train_throughput")
        mean = doc["result"]["mean_over_seeds"]
        plots["train_throughput"] = _bars("Training throughput, BERT mini on JRTE (mean of seeds)",
                                          [TRAIN_CONTENDERS.get(k, k).replace("`", "") for k in mean],
                                          [v["samples_per_s"] for v in mean.values()], "samples/s", doc=doc)
    if (data / "scaling.json").is_file():
        doc = _load(config, "scaling")
        modes = doc["result"]["modes"]
        plots["scaling"] = _bars("Launch modes on the same CPU cores (overhead, not speed-up)", list(modes),
                                 [m["train_samples_per_second"] for m in modes.values()], "samples/s in the loop", doc=doc)
    return plots


def on_files(files, config):
    for name, content in _plots(config).items():
        files.append(File.generated(config, f"{PLOT_DIR}/{name}.png", content=content))
    graph = _import_graph()
    files.append(File.generated(config, ROOMS_PLOT, content=graph.draw_rooms(graph.room_imports(_repo_root(config) / "jbert"))))
    return files
