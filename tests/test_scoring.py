"""Batch scoring: one output row per input row, bad rows flagged, streaming, resume, CLI exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, SHARED_DATA, TEXTS

import jbert.serve.scoring.run as scoring
from jbert.core.artifacts import json_temporary_path
from jbert.core.errors import UserError
from jbert.serve.scoring.options import ScoreOptions
from jbert.serve.scoring.run import score_file




def options(export_dir, source, output, **overrides) -> ScoreOptions:
    return ScoreOptions(export_dir=str(export_dir), input=str(source), output=str(output), show_progress=False, **overrides)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_csv_rows_in_rows_out_with_errors(tmp_path, export_dir, classifier):
    source = tmp_path / "reviews.csv"
    source.write_text(
        "id,text,label\n"
        '1,この商品はとても良いです。,positive\n'
        "2,,negative\n"                               # empty text
        '3,"最悪の料理でした。\n二行目",negative\n'    # a quoted cell over two lines
        "\n"                                           # blank line: not a record
        "4,\u3000 ,neutral\n"                          # only spaces
        "5,普通のホテルです,neutral,extra\n"           # too many cells
        "6\n"                                          # text column missing
        "7,今日は雨,negative\n",
        encoding="utf-8",
    )
    output = tmp_path / "scored.csv"
    summary = score_file(options(export_dir, source, output, all_scores=True), classifier)
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    assert summary.rows == 7 and summary.scored == 3 and summary.errors == 4
    assert list(rows[0]) == ["id", "text", "label", "predicted_label", "predicted_score", "truncated", "error",
                             "score_negative", "score_neutral", "score_positive"]
    assert rows[0]["label"] == "positive"  # the gold label column is kept, never overwritten
    expected = classifier.predict(["この商品はとても良いです。", "最悪の料理でした。\n二行目", "今日は雨"], top_k=3)
    for row, result in zip([rows[0], rows[2], rows[6]], expected):
        assert row["predicted_label"] == result["label"] and row["error"] == ""
        assert float(row["predicted_score"]) == pytest.approx(result["score"], abs=1e-6)
        assert sum(float(row[f"score_{name}"]) for name in classifier.labels) == pytest.approx(1.0, abs=1e-5)
    assert "line 3: column 'text' is empty" in rows[1]["error"]
    assert "line 7: column 'text' is empty after clean-up" in rows[3]["error"]
    assert "line 8: 4 cells but the header has 3" in rows[4]["error"]
    assert "line 9: column 'text' is missing" in rows[5]["error"]
    assert rows[1]["predicted_label"] == ""
    assert not list(tmp_path.glob(".scored.csv.partial*"))  # temp files renamed / removed


def test_jsonl_with_invalid_utf8_bad_json_and_wrong_types(tmp_path, export_dir, classifier):
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"text": "この商品はとても良いです。", "meta": {"shop": 1}}, ensure_ascii=False).encode(),
        b'{"text": "\xff\xfe broken bytes"}',
        b"{not json",
        json.dumps({"text": 42}).encode(),
        b"[1, 2]",
        b"",
        json.dumps({"text": "犬が走る"}, ensure_ascii=False).encode(),
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.jsonl"
    summary = score_file(options(export_dir, source, output), classifier)
    rows = read_jsonl(output)
    assert len(rows) == 6 and summary.rows == 6 and summary.errors == 4
    assert rows[0]["meta"] == {"shop": 1} and rows[0]["error"] is None and rows[0]["predicted_label"] in classifier.labels
    assert "line 2: bytes" in rows[1]["error"] and "cannot be decoded as utf-8" in rows[1]["error"]
    assert "line 3 is not valid JSON" in rows[2]["error"]
    assert "column 'text' must be a string, got int" in rows[3]["error"] and rows[3]["text"] == 42
    assert "a JSON list where an object was expected" in rows[4]["error"]
    assert rows[5]["text"] == "犬が走る" and rows[5]["error"] is None


def test_rows_the_property_tests_showed_at_risk_are_kept(tmp_path, export_dir, classifier):
    """A blank line above the header, a row written as "" and a lone surrogate escape: rows in == rows out."""
    source = tmp_path / "edge.csv"
    source.write_text('\nid,text\n""\n2,この商品はとても良いです。\n', encoding="utf-8")
    output = tmp_path / "edge_scored.csv"
    summary = score_file(options(export_dir, source, output), classifier)
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert summary.rows == 2 and [r["id"] for r in rows] == ["", "2"]
    assert rows[0]["error"] and rows[1]["predicted_label"]

    source = tmp_path / "surrogate.jsonl"
    source.write_text('{"text": "良い\\ud800です"}\n{"text": "犬が走る"}\n', encoding="utf-8")
    output = tmp_path / "surrogate_scored.jsonl"
    summary = score_file(options(export_dir, source, output), classifier)
    rows = read_jsonl(output)
    assert summary.rows == 2 and summary.errors == 1 and summary.scored == 1
    assert "unpaired UTF-16 surrogate at character 2" in rows[0]["error"]
    assert rows[1]["predicted_label"] == classifier.predict(["犬が走る"])[0]["label"]


def test_a_carriage_return_in_a_cell_reads_back_as_one_row(tmp_path, export_dir, classifier):
    source = tmp_path / "cr.jsonl"
    source.write_text(json.dumps({"id": 1, "text": "一行目\r二行目"}, ensure_ascii=False) + "\n"
                      + json.dumps({"id": 2, "text": "普通"}, ensure_ascii=False) + "\n", encoding="utf-8")
    output = tmp_path / "cr_scored.csv"
    score_file(options(export_dir, source, output), classifier)
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["1", "2"] and rows[0]["text"] == "一行目\r二行目"


def test_cp932_tsv_detected_and_long_texts(tmp_path, export_dir, classifier):
    long_text = "この商品はとても良いです。" * 7600  # 98,800 characters: under --max-text-chars 100,000
    source = tmp_path / "in.tsv"
    source.write_bytes(f"text\tid\n{long_text}\t1\n普通のホテルです\t2\n".encode("cp932"))
    output = tmp_path / "out.jsonl"
    summary = score_file(options(export_dir, source, output), classifier)
    rows = read_jsonl(output)
    assert rows[1]["text"] == "普通のホテルです" and rows[1]["predicted_label"] == classifier.predict([rows[1]["text"]])[0]["label"]
    assert rows[0]["truncated"] is True and summary.truncated == 1
    refused = tmp_path / "refused.jsonl"
    score_file(options(export_dir, source, refused, truncate=False), classifier)
    rows = read_jsonl(refused)
    assert "longer than the model's max_length of 64 tokens" in rows[0]["error"] and rows[1]["error"] is None


def test_resume_continues_without_rescoring(tmp_path, export_dir, classifier, monkeypatch):
    source = tmp_path / "in.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for index in range(50):
            handle.write(json.dumps({"id": index, "text": TEXTS[index % len(TEXTS)] + "犬" * (index % 7)}, ensure_ascii=False) + "\n")
    complete = tmp_path / "complete.csv"
    score_file(options(export_dir, source, complete, chunk_size=8), classifier)

    output = tmp_path / "out.csv"
    real_score_chunk = scoring.score_records
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_score_chunk(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_records", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_file(options(export_dir, source, output, chunk_size=8), classifier)
    assert not output.exists() and (tmp_path / ".out.csv.partial").exists()
    # Leftovers are not silently overwritten.
    with pytest.raises(UserError, match="pass --resume"):
        score_file(options(export_dir, source, output, chunk_size=8), classifier)

    calls.clear()
    leftover = json_temporary_path(tmp_path / ".out.csv.partial.json")  # what a kill during the state write leaves
    leftover.write_text('{"rows": 3')
    monkeypatch.setattr(scoring, "score_records", lambda *a, **k: (calls.append(len(a[1])), real_score_chunk(*a, **k))[1])
    summary = score_file(options(export_dir, source, output, chunk_size=8, resume=True), classifier)
    assert summary.resumed_rows == 24 and sum(calls) == 26 and summary.rows == 50
    assert output.read_bytes() == complete.read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial or state file left"
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        score_file(options(export_dir, source, output), classifier)


def test_resume_refuses_a_changed_input(tmp_path, export_dir, classifier, monkeypatch):
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "犬\n" * 20, encoding="utf-8")
    output = tmp_path / "out.jsonl"
    real_score_chunk = scoring.score_records
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_score_chunk(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_records", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_file(options(export_dir, source, output, chunk_size=5), classifier)
    monkeypatch.setattr(scoring, "score_records", real_score_chunk)
    source.write_text("text\n" + "猫\n" * 25, encoding="utf-8")
    with pytest.raises(UserError, match="cannot resume .*input_size"):
        score_file(options(export_dir, source, output, chunk_size=5, resume=True), classifier)
    summary = score_file(options(export_dir, source, output, chunk_size=5, overwrite=True), classifier)
    assert summary.rows == 25 and len(read_jsonl(output)) == 25


def test_bad_options_and_files(tmp_path, export_dir, classifier):
    source = tmp_path / "in.csv"
    source.write_text("review\nよい\n", encoding="utf-8")
    with pytest.raises(UserError, match="no column 'text'.*'review'.*--text-column"):
        score_file(options(export_dir, source, tmp_path / "out.jsonl"), classifier)
    summary = score_file(options(export_dir, source, tmp_path / "out.jsonl", text_column="review"), classifier)
    assert summary.scored == 1
    with pytest.raises(UserError, match="does not exist"):
        score_file(options(export_dir, tmp_path / "missing.csv", tmp_path / "o.jsonl"), classifier)
    with pytest.raises(UserError, match="cannot tell the file format"):
        score_file(options(export_dir, source, tmp_path / "o.xlsx"), classifier)
    with pytest.raises(UserError, match="must differ from the input"):
        score_file(options(export_dir, source, source), classifier)
    clash = tmp_path / "clash.csv"
    clash.write_text("text,predicted_label\nよい,x\n", encoding="utf-8")
    with pytest.raises(UserError, match="already has the column"):
        score_file(options(export_dir, clash, tmp_path / "c.jsonl"), classifier)


class _CountingClassifier:
    """Stands in for OnnxClassifier to measure the streaming machinery alone (no model)."""

    labels = ["a", "b"]
    problem_type = "single_label_classification"
    is_pair = False
    max_length = 16
    model_path = Path("fake.onnx")

    def __init__(self, settings):
        from jbert.core.artifacts import Manifest, ManifestModelFile
        from jbert.core.export_dir import ExportDir

        self.settings = settings
        manifest = Manifest(task=self.problem_type, labels=self.labels, max_length=self.max_length, is_pair=False,
                            default_model="fp32", models={"fp32": ManifestModelFile(file="fake.onnx", precision="fp32")})
        self.export_dir = ExportDir(Path("."), manifest, settings, self.labels)

    def input_problem(self, text, text_pair=None, max_text_chars=None):
        return None if isinstance(text, str) and text else "text is empty"

    def encode(self, texts, text_pairs=None, truncate=True, max_text_chars=None):
        return texts

    def predict_encoded(self, encodings, top_k=None, batch_size=32):
        return [{"label": "a", "score": 0.5, "truncated": False} for _ in encodings]


def test_memory_stays_bounded_while_streaming(tmp_path):
    from jbert.core.artifacts import JbertSettings

    fake = _CountingClassifier(JbertSettings())

    def peak_bytes(rows: int) -> int:
        source = tmp_path / f"in{rows}.csv"
        with open(source, "w", encoding="utf-8") as handle:
            handle.write("text\n" + "この商品はとても良いです。ホテルの部屋\n" * rows)
        tracemalloc.start()
        score_file(ScoreOptions(export_dir="unused", input=str(source), output=str(tmp_path / f"o{rows}.jsonl"),
                                chunk_size=200, show_progress=False), fake)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert sum(1 for _ in open(tmp_path / f"o{rows}.jsonl", encoding="utf-8")) == rows
        return peak

    small, large = peak_bytes(1_000), peak_bytes(10_000)
    # 10 times the rows must not mean 10 times the memory: only one chunk is held at a time.
    assert large < 1.5 * small + 256 * 1024, (small, large)


def test_cli_exit_codes_and_stdin(tmp_path, export_dir):
    source = tmp_path / "in.csv"
    source.write_text("text\nこの商品はとても良いです。\n最悪の料理でした。\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "score", str(export_dir), str(source), str(tmp_path / "o.csv"),
         "--num-threads", "1", "--quiet"], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "scored 2 of 2 rows (0 errors" in done.stderr
    assert len(list(csv.DictReader(open(tmp_path / "o.csv", encoding="utf-8")))) == 2

    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "score", str(export_dir), str(source), str(tmp_path / "o2.csv"),
         "--text-column", "txt", "--quiet"], capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "no column 'txt'" in bad.stderr and "Traceback" not in bad.stderr

    piped = subprocess.run(
        [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "score", str(export_dir), "-", "-", "--input-format", "jsonl", "--quiet"],
        input='{"text": "犬が走る"}\n{"text": ""}\n'.encode(), capture_output=True, timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    rows = [json.loads(line) for line in piped.stdout.decode().splitlines()]
    assert len(rows) == 2 and rows[0]["error"] is None and "is empty" in rows[1]["error"]


@pytest.mark.shared_data
def test_real_reviews_score_like_runtime(tmp_path, classifier, export_dir):
    source = SHARED_DATA / "jrte_rhr.tsv"
    if not source.is_file():
        pytest.skip(f"{source} not present (shared data is not part of the repository)")
    # The shared file has no header: give it one, keep the first 300 rows.
    lines = source.read_text(encoding="utf-8").splitlines()[:300]
    headed = tmp_path / "rhr.tsv"
    headed.write_text("id\tgold\ttext\tjudges\tusage\n" + "\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "rhr.jsonl"
    summary = score_file(options(export_dir, headed, output, batch_size=16), classifier)
    rows = read_jsonl(output)
    assert summary.rows == len(rows) == 300
    expected = classifier.predict([r["text"] for r in rows])
    np.testing.assert_allclose([r["predicted_score"] for r in rows], [e["score"] for e in expected], atol=1e-6)


def _write_numbered_jsonl(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(rows):
            text = TEXTS[index % len(TEXTS)] + "犬" * (index % 7) if index % 97 else ""  # some rows are errors
            handle.write(json.dumps({"id": index, "text": text}, ensure_ascii=False) + "\n")


def _kill_when(command: list[str], state_file: Path, rows_at_least: int, rows_of) -> subprocess.Popen:
    """Start `command`, SIGKILL it once `state_file` says `rows_at_least` rows are written."""
    import signal
    import time

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if rows_of(json.loads(state_file.read_text(encoding="utf-8"))) >= rows_at_least:
                break
        except (OSError, ValueError):
            pass  # not written yet
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return process


def test_sigkill_mid_file_then_resume_writes_every_row_once(tmp_path, export_dir, classifier):
    source = tmp_path / "in.jsonl"
    _write_numbered_jsonl(source, 6000)
    complete = tmp_path / "complete.jsonl"
    score_file(options(export_dir, source, complete, chunk_size=100), classifier)

    output = tmp_path / "out.jsonl"
    command = [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "score", str(export_dir), str(source), str(output),
               "--chunk-size", "100", "--model", "fp32", "--num-threads", "1", "--quiet"]
    _kill_when(command, tmp_path / ".out.jsonl.partial.json", 1000, lambda state: state["rows"])
    assert not output.exists(), "a killed run must not leave an output that looks finished"
    assert (tmp_path / ".out.jsonl.partial").exists()

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "taken over from the interrupted run" in resumed.stderr
    ids = [row["id"] for row in read_jsonl(output)]
    assert ids == list(range(6000))
    assert output.read_bytes() == complete.read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial or state file left"


def test_sigkill_of_a_directory_run_then_resume(tmp_path, export_dir, classifier):
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    for name, rows in (("a.jsonl", 2500), ("b.jsonl", 2500)):
        _write_numbered_jsonl(tmp_path / "in" / name, rows)
    complete = tmp_path / "complete"
    score_file(options(export_dir, tmp_path / "in", complete, chunk_size=100), classifier)

    output = tmp_path / "scored"
    command = [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "score", str(export_dir), str(tmp_path / "in" / "*.jsonl"),
               str(output), "--chunk-size", "100", "--model", "fp32", "--num-threads", "1", "--quiet"]
    _kill_when(command, output / ".jbert-progress.json", 1500,
               lambda state: sum(shard["rows"] for shard in state["shards"]))
    assert not (output / "manifest.json").exists()
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "interrupted run's shards" in refused.stderr and "--resume" in refused.stderr

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows_in"] == manifest["rows_out"] == 5000 and manifest["resumed_rows"] >= 1000

    def rows(directory):
        return [r for shard in sorted(directory.glob("part-*.parquet")) for r in pq.read_table(shard).to_pylist()]

    got, expected = rows(output), rows(complete)
    assert [(r["source_file"], r["source_row"]) for r in got] == [(r["source_file"], r["source_row"]) for r in expected]
    assert [r["id"] for r in got] == list(range(2500)) * 2
    assert [r["predicted_label"] for r in got] == [r["predicted_label"] for r in expected]
    assert [r["error"] for r in got] == [r["error"] for r in expected]
    np.testing.assert_allclose([r["predicted_score"] or 0 for r in got], [r["predicted_score"] or 0 for r in expected], atol=1e-6)
    assert not list(output.glob(".*"))  # no progress file or half-written shard left


def test_resume_removes_what_a_kill_left_half_written(tmp_path, export_dir, classifier):
    """A kill can land while a shard or the progress file is being written (their temporary names):
    --resume removes both, and the finished directory holds no hidden file (this once failed in CI)."""
    (tmp_path / "in").mkdir()
    _write_numbered_jsonl(tmp_path / "in" / "a.jsonl", 250)
    output = tmp_path / "scored"
    score_file(options(export_dir, tmp_path / "in" / "a.jsonl", output, chunk_size=100), classifier)
    (output / "manifest.json").unlink()  # as if the run had been killed before its end
    leftovers = [output / "..jbert-progress.json.0123abcd.tmp", output / ".part-00000-0000000201.parquet.4567ef.tmp",
                 output / ".manifest.json.89ab.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    with pytest.raises(UserError, match="interrupted"):
        score_file(options(export_dir, tmp_path / "in" / "a.jsonl", output, chunk_size=100), classifier)
    summary = score_file(options(export_dir, tmp_path / "in" / "a.jsonl", output, chunk_size=100, resume=True), classifier)
    assert summary.rows == 250
    assert not list(output.glob(".*"))


def test_remote_paths_through_fsspec(export_dir, classifier):
    """Inputs and outputs named by URL go through fsspec (its in-memory filesystem stands in for s3://)."""
    import fsspec
    import pyarrow.parquet as pq

    memory = fsspec.filesystem("memory")
    for name, text in (("a.csv", "id,text\n1,この商品はとても良いです。\n2,\n"), ("b.csv", "id,text\n3,犬が走る\n")):
        with memory.open(f"/reviews/{name}", "wb") as handle:
            handle.write(text.encode("utf-8"))
    try:
        summary = score_file(options(export_dir, "memory://reviews/*.csv", "memory://scored/"), classifier)
        assert summary.rows == 3 and summary.errors == 1
        assert sorted(memory.ls("/scored", detail=False)) == [
            "/scored/manifest.json", "/scored/part-00000-0000000001.parquet", "/scored/part-00001-0000000001.parquet"]
        with memory.open("/scored/part-00000-0000000001.parquet", "rb") as handle:
            rows = pq.read_table(handle).to_pylist()
        assert [r["id"] for r in rows] == ["1", "2"] and rows[0]["source_file"] == "memory:///reviews/a.csv"
        assert rows[0]["predicted_label"] == classifier.predict(["この商品はとても良いです。"])[0]["label"]
        assert "column 'text' is empty" in rows[1]["error"]
        with pytest.raises(UserError, match="a URL output is a directory of shards"):
            score_file(options(export_dir, "memory://reviews/b.csv", "memory://one.jsonl"), classifier)
    finally:
        memory.rm("/", recursive=True)
