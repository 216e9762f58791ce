"""The documentation stays buildable and the README stays short and linked.

`mkdocs build --strict` turns a broken link, a missing page, a missing anchor, a benchmark marker
without its data file and a reference to a module that no longer exists into a failure, so the
docs cannot silently fall behind the code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MAX_README_LINES = 220
# Every benchmark script (bench/json_out.py and bench/contenders.py are shared helpers, not benchmarks).
BENCH_SCRIPTS = tuple(sorted(p.stem for p in (REPO_ROOT / "bench").glob("*.py") if p.stem not in ("json_out", "contenders")))


def _nav_pages(nav) -> list[str]:
    """Every Markdown file named in mkdocs.yml's nav, nested sections included."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO_ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"

    config = yaml.load((REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    for page in _nav_pages(config["nav"]):
        stem = page.removesuffix(".md")
        built = site / (f"{stem}.html" if stem == "index" or stem.endswith("/index") else f"{stem}/index.html")
        assert built.is_file(), f"{page} was not built ({built})"
    # The plots are drawn from docs/data at build time; a benchmark marker left unreplaced is a bug.
    for plot in ("inference", "tokenizer", "train_throughput", "scaling"):
        assert (site / "img" / "bench" / f"{plot}.png").stat().st_size > 1000
    benchmarks = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "bench:" not in benchmarks and "Measured with" in benchmarks
    # The machine table is drawn from every docs/data file.
    assert "<code>export_int8.json</code>" in benchmarks and "<!-- machines -->" not in benchmarks
    # The reference lists the modules of each stage, read from the package.
    serve_reference = (site / "reference" / "serve" / "index.html").read_text(encoding="utf-8")
    assert 'id="jbert.serve.runtime.OnnxClassifier"' in serve_reference


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move details into docs/ (limit {MAX_README_LINES})"


def test_readme_relative_links_point_at_files():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "README.md links into the docs"
    missing = [t for t in relative if not (REPO_ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_docs_figure_names_its_command_and_date():
    data_files = sorted((REPO_ROOT / "docs" / "data").glob("*.json"))
    assert data_files
    for path in data_files:
        document = json.loads(path.read_text(encoding="utf-8"))
        for key in ("benchmark", "command", "date", "transcribed", "result"):
            assert key in document, f"{path.name} lacks '{key}'"
        assert re.match(r"^\d{4}-\d{2}-\d{2}", document["date"]), f"{path.name}: date {document['date']!r}"


def test_every_benchmark_can_write_docs_data():
    for name in BENCH_SCRIPTS:
        source = (REPO_ROOT / "bench" / f"{name}.py").read_text(encoding="utf-8")
        assert "add_json_out_argument(parser)" in source and "write_json_out(" in source, f"bench/{name}.py lacks --json-out"


def test_json_out_writes_the_command_date_and_result(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_json_out", REPO_ROOT / "bench" / "json_out.py")
    json_out = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(json_out)
    monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / "bench" / "tokenizer.py"), "--repeats", "5", "--json-out", "x.json"])
    target = tmp_path / "docs" / "data" / "tokenizer.json"
    json_out.write_json_out(str(target), "tokenizer", {"speedup": 5.4})
    document = json.loads(target.read_text(encoding="utf-8"))
    assert document["command"] == "python bench/tokenizer.py --repeats 5"  # rerunnable, without --json-out
    assert document["transcribed"] is False and document["result"] == {"speedup": 5.4}
    assert re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$", document["date"])


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_bench_reports_the_seed_mean_and_the_docs_show_the_spread():
    sys.path.insert(0, str(REPO_ROOT / "bench"))  # quality.py imports its json_out neighbour
    try:
        quality = _load_module("bench_quality", REPO_ROOT / "bench" / "quality.py")
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    runs = {42: quality.scores({"test": {"accuracy": 0.877, "macro_f1": 0.86}, "validation": {"macro_f1": 0.88}}, 50.0),
            1: quality.scores({"test": {"accuracy": 0.889, "macro_f1": 0.88}, "validation": {"macro_f1": 0.89}}, 70.0)}
    summary = quality.over_seeds(runs)
    assert summary["test_accuracy"] == 0.883 and summary["test_macro_f1"] == 0.87 and summary["seconds"] == 60.0
    assert (summary["test_accuracy_min"], summary["test_accuracy_max"]) == (0.877, 0.889)
    assert summary["seeds"]["1"]["test_accuracy"] == 0.889

    hooks = _load_module("docs_hooks", REPO_ROOT / "docs" / "hooks.py")
    result = {"datasets": {"rhr": {"data": {"train": 10, "validation": 5, "test": 5}, "arms": {
        "baseline": quality.scores({"test": {"accuracy": 0.879, "macro_f1": 0.865}}, 0.3), "mlm": summary}}}}
    table = hooks.RENDERERS["quality"](result, None)
    assert "| 0.883 (2 seeds: 0.877-0.889) |" in table.replace("  ", " ")
    assert "| 0.879 |" in table.replace("  ", " ")


# --- figures that cannot drift ---------------------------------------------------------------------

DOCS_PAGES = sorted((REPO_ROOT / "docs").glob("*.md"))
DATA_DIR = REPO_ROOT / "docs" / "data"
# The README's headline rows: each must carry a figure marker, so a row cannot lose its check unseen.
README_HEADLINES = ("training loop vs Hugging Face `Trainer`", "fast serving tokenizer vs", "ONNX fp32 vs PyTorch",
                    "jbert int8 runtime vs transformers pipeline", "batch scoring on Ray", "HTTP service, 32")
# Words from the team's own bookkeeping that mean nothing to a reader of the docs.
INTERNAL_WORDS = re.compile(
    r"\bissues? #?\d+|\bthe issue's\b|\btargets? (?:is |are |was |were )?(?:met|held)\b|\(target \d|"
    r"\bthe target was\b|\bthe team'?s?\b|\bcolleague|\bengineers'", re.IGNORECASE)
# A suite size written down goes stale with the next test: pytest prints the count of each run.
STATIC_TEST_COUNT = re.compile(r"\b\d+ passed\b[^|\n]{0,40}\b(?:skipped|xfailed|in \d)")


def _hooks():
    return _load_module("docs_hooks_figures", REPO_ROOT / "docs" / "hooks.py")


def test_readme_headline_figures_equal_their_json():
    hooks = _hooks()
    text = README.read_text(encoding="utf-8")
    problems = hooks.figure_problems(text, DATA_DIR)
    assert not problems, "README figures differ from docs/data (rerun or fix the sentence):\n" + "\n".join(problems)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for headline in README_HEADLINES:
        row = next((line for name, line in rows.items() if name.startswith(headline)), None)
        assert row is not None, f"README headline row {headline!r} is gone (update README_HEADLINES)"
        assert hooks.figure_markers(row), f"README headline row {headline!r} has no figure marker"


def test_docs_page_figures_equal_their_json():
    hooks = _hooks()
    problems = [f"{page.name}: {problem}" for page in DOCS_PAGES
                for problem in hooks.figure_problems(page.read_text(encoding="utf-8"), DATA_DIR)]
    assert not problems, "\n".join(problems)


def test_a_figure_that_drifted_from_its_json_is_reported(tmp_path):
    hooks = _hooks()
    (tmp_path / "inference.json").write_text(json.dumps({"result": {"ratios": {"x": 3.44, "share": 0.991}}}))
    marker = "<!-- figure:inference/ratios/x -->"
    assert hooks.figure_problems(f"**3.4x**{marker} and 3.44{marker}", tmp_path) == []
    assert hooks.figure_problems(f"99.1 %<!-- figure:inference/ratios/share % -->", tmp_path) == []
    drifted = hooks.figure_problems(f"jbert is **3.7x**{marker} faster", tmp_path)
    assert len(drifted) == 1 and "says 3.7" in drifted[0] and "3.4" in drifted[0]
    assert hooks.figure_problems("5<!-- figure:inference/ratios/gone -->", tmp_path)  # a value the JSON lacks
    assert hooks.figure_problems("fast<!-- figure:inference/ratios/x -->", tmp_path)  # a marker without a figure


def test_docs_and_readme_use_no_internal_words_or_static_test_counts():
    for path in [README, *DOCS_PAGES]:
        text = path.read_text(encoding="utf-8")
        internal = INTERNAL_WORDS.findall(text)
        assert not internal, f"{path.name} uses internal words a reader cannot follow: {internal}"
        counts = STATIC_TEST_COUNT.findall(text)
        assert not counts, f"{path.name} writes a test-suite size down ({counts}); pytest prints it on every run"
    assert INTERNAL_WORDS.search("the four issue 13 lists") and STATIC_TEST_COUNT.search("254 passed and 4 skipped in 2 min")


def test_the_machine_is_described_once():
    # The CPU vendor is stated only on the benchmarks page, beside the table drawn from docs/data.
    for path in [README, *DOCS_PAGES]:
        if path.name != "benchmarks.md":
            vendors = re.findall(r"\b(?:Xeon|EPYC|Ryzen|Core i\d)\b", path.read_text(encoding="utf-8"))
            assert not vendors, f"{path.name} describes the machine ({vendors}); link to benchmarks.md#the-machine"
    assert "<!-- machines -->" in (REPO_ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")


def test_readme_and_getting_started_export_the_same_way():
    def export_line(path):
        return next(line.split("#")[0].split() for line in path.read_text(encoding="utf-8").splitlines()
                    if line.startswith("python export.py outputs/quickstart"))
    assert export_line(README) == export_line(REPO_ROOT / "docs" / "getting-started.md")
