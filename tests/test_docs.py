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
# Every benchmark script (bench/json_out.py is their shared helper, not a benchmark).
BENCH_SCRIPTS = tuple(sorted(p.stem for p in (REPO_ROOT / "bench").glob("*.py") if p.stem != "json_out"))


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
