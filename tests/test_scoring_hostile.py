"""Batch scoring against hostile input, with real `serve_onnx.py score` processes where the issue names one.

Long texts on both sides of --max-text-chars (and at the size where MeCab segfaults), JSON lines
that `json` cannot read, output paths that are the input after resolving, inputs that never end,
a binary Parquet text column, non-finite numbers in JSONL output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

from jbert.serve.runtime import DEFAULT_MAX_TEXT_CHARS, MAX_TEXT_CHARS_LIMIT
from jbert.serve.scoring.options import ScoreOptions
from jbert.serve.scoring.outputs import json_line
from jbert.serve.scoring.rows import score_records
from jbert.serve.scoring.records import Record

# Every CLI run below ends well within this; a hang (reading a FIFO, /dev/zero) fails the test instead.
DEADLINE_S = 240
# Measured: MeCab (as jbert calls it) dies with SIGSEGV on "a" * 193,333 (survives 192,357).
CRASH_SIZE_ASCII = 200_000
MIXED = "この商品はとても良いです。Good 123! "  # 27 characters: kana, kanji, ASCII, digits, spaces


def score_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `serve_onnx.py score ARGS --num-threads 1 --quiet` as a real process, bounded in time."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "serve_onnx.py"), "score", *args, "--num-threads", "1", "--quiet"],
                          input=stdin, capture_output=True, timeout=DEADLINE_S)


def strict_json_lines(path: Path) -> list[dict]:
    """Rows of a JSONL file read as strict JSON: NaN / Infinity (which Python's json accepts) fail the test."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").splitlines()]


def mixed_text(length: int) -> str:
    return (MIXED * (length // len(MIXED) + 1))[:length]


def test_long_texts_on_both_sides_of_the_cap_and_at_the_crash_size(tmp_path, export_dir):
    """At the cap: scored. One over: an error row. At MeCab's crash size: an error row and exit 0, not 139."""
    assert MAX_TEXT_CHARS_LIMIT < 192_357 and DEFAULT_MAX_TEXT_CHARS == 100_000
    source = tmp_path / "big.csv"
    texts = [mixed_text(DEFAULT_MAX_TEXT_CHARS), mixed_text(DEFAULT_MAX_TEXT_CHARS + 1), "a" * CRASH_SIZE_ASCII,
             "犬が走る", "a" * 1_000_000]
    source.write_text("text,id\n" + "".join(f"{text},{i}\n" for i, text in enumerate(texts)), encoding="utf-8")
    output = tmp_path / "scored.jsonl"
    done = score_cli(str(export_dir), str(source), str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = strict_json_lines(output)
    assert [row["id"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0]["error"] is None and rows[0]["truncated"] is True and rows[3]["error"] is None
    for row, length in zip((rows[1], rows[2], rows[4]), (DEFAULT_MAX_TEXT_CHARS + 1, CRASH_SIZE_ASCII, 1_000_000)):
        assert f"column 'text' has {length:,} characters, more than --max-text-chars 100,000" in row["error"]
        assert row["predicted_label"] is None
    assert b"scored 2 of 5 rows (3 errors, 1 truncated, 3 over --max-text-chars)" in done.stderr

    # --long-text truncate-chars: the long rows' beginnings are scored, marked truncated and counted.
    cut = tmp_path / "cut.jsonl"
    done = score_cli(str(export_dir), str(source), str(cut), "--max-text-chars", "1000", "--long-text", "truncate-chars")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = strict_json_lines(cut)
    assert all(row["error"] is None for row in rows)
    assert [row["truncated"] for row in rows] == [True, True, True, False, True]
    assert len(rows[2]["text"]) == CRASH_SIZE_ASCII  # the input column is written back whole
    assert b"scored 5 of 5 rows (0 errors, 4 truncated, 4 over --max-text-chars)" in done.stderr

    # Nobody can set the cap past the crash.
    done = score_cli(str(export_dir), str(source), str(tmp_path / "no.jsonl"), "--max-text-chars", str(MAX_TEXT_CHARS_LIMIT + 1))
    assert done.returncode == 2 and b"--max-text-chars must be between 1 and 150,000" in done.stderr
    assert b"Traceback" not in done.stderr and not (tmp_path / "no.jsonl").exists()


def test_hostile_json_lines_become_error_rows_and_output_is_strict_json(tmp_path, export_dir):
    """Deep nesting and a 5,000-digit integer: error rows, the run goes on; NaN/Infinity in: null out."""
    source = tmp_path / "in.jsonl"
    lines = [
        '{"text": "犬が走る", "n": 1}',
        '{"text": "x", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"text": "x", "big": ' + "7" * 5_000 + "}",
        '{"text": "猫が寝る", "nan": NaN, "inf": [Infinity, -Infinity]}',
        "[" * 50_000,
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    done = score_cli(str(export_dir), str(source), str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = strict_json_lines(output)
    assert len(rows) == 5 and rows[0]["error"] is None and rows[3]["error"] is None
    assert "line 2 nests arrays or objects too deeply" in rows[1]["error"]
    assert "line 3 holds a value Python cannot read" in rows[2]["error"] and "digits" in rows[2]["error"]
    assert "line 5" in rows[4]["error"]
    assert rows[3]["nan"] is None and rows[3]["inf"] == [None, None]
    assert b"scored 2 of 5 rows (3 errors" in done.stderr


def test_non_finite_numbers_never_reach_jsonl(export_dir):
    """json_line writes null for NaN/Infinity (never the non-JSON words); a non-finite score is an error row."""
    assert json_line({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}, "e": b"\xe7\x8a\xac\xff"}) == \
        '{"a": null, "b": [null, 1.5], "c": {"d": null}, "e": "犬\\\\xff"}\n'

    class NanModel:
        problem_type, labels, max_length = "single_label_classification", ["a", "b"], 16

        def input_problem(self, text, text_pair=None, max_text_chars=None):
            return None

        def encode(self, texts, text_pairs=None, truncate=True, max_text_chars=None):
            return texts

        def predict_encoded(self, encodings, top_k=None, batch_size=32):
            return [{"label": "a", "score": math.nan if text == "bad" else 0.9, "truncated": False} for text in encodings]

    counts = {"scored": 0, "errors": 0, "truncated": 0}
    rows = score_records(NanModel(), [Record(1, {"text": "bad"}), Record(2, {"text": "good"})], "text", None, counts=counts)
    assert "non-finite score" in rows[0]["error"] and rows[1]["predicted_score"] == 0.9
    assert counts == {"scored": 1, "errors": 1, "truncated": 0, "over_max_text_chars": 0}


def test_an_output_that_is_the_input_after_resolving_is_refused(tmp_path, export_dir):
    """`in.csv` as `sub/../in.csv` or through a symbolic link: refused with exit 2, the input untouched."""
    source = tmp_path / "in.csv"
    source.write_text("text\n犬が走る\n", encoding="utf-8")
    original = source.read_bytes()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(source)
    for output in (tmp_path / "sub" / ".." / "in.csv", link):
        done = score_cli(str(export_dir), str(source), str(output), "--overwrite")
        assert done.returncode == 2, done.stderr[-3000:]
        assert b"is the input file" in done.stderr and b"after resolving" in done.stderr
        assert b"Traceback" not in done.stderr
        assert source.read_bytes() == original
    # The check itself, without a process: the same file by any path, a different file never.
    assert "is the input file" in _problems(ScoreOptions(export_dir="e", input=str(link), output=str(source)))
    assert "is the input file" not in _problems(ScoreOptions(export_dir="e", input=str(source), output=str(tmp_path / "new.csv")))


def _problems(options: ScoreOptions) -> str:
    try:
        options.validate()
    except Exception as err:  # noqa: BLE001 (the message is what is checked)
        return str(err)
    return ""


def test_fifo_and_dev_zero_are_refused_before_reading(tmp_path, export_dir):
    """An input that never ends is refused unread with exit 2; standard input ("-") still works."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    cases = [
        ([str(fifo), str(tmp_path / "a.csv")], b"is a FIFO (named pipe), not a regular file"),
        (["/dev/zero", str(tmp_path / "b.csv"), "--input-format", "csv"], b"is a character device, not a regular file"),
        ([str(fifo), str(tmp_path / "dir") + "/"], b"is a FIFO (named pipe), not a regular file"),
    ]
    for args, message in cases:
        done = score_cli(str(export_dir), *args)  # a read of either would never end: the deadline fails the test
        assert done.returncode == 2, done.stderr[-3000:]
        assert message in done.stderr and b"Traceback" not in done.stderr
    piped = score_cli(str(export_dir), "-", "-", "--input-format", "csv", stdin="text\n犬が走る\n".encode())
    assert piped.returncode == 0 and json.loads(piped.stdout)["error"] is None


@pytest.mark.parametrize("output_name", ["out.jsonl", "out.csv", "shards/"])
def test_a_binary_parquet_text_column_gives_error_rows(tmp_path, export_dir, output_name):
    """Bytes where text belongs: an error row per bytes cell with a hint, the run ends with exit 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": pa.array([b"\xe7\x8a\xac", b"\xff\xfe"], type=pa.binary()), "id": [1, 2]}), source)
    output = tmp_path / output_name
    done = score_cli(str(export_dir), str(source), str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert b"Traceback" not in done.stderr and b"scored 0 of 2 rows (2 errors" in done.stderr
    if output_name == "out.jsonl":
        rows = strict_json_lines(output)
        assert [row["text"] for row in rows] == ["犬", "\\xff\\xfe"]
        assert all("must be a string, got bytes; store the text as a string (UTF-8) column" in row["error"] for row in rows)
    elif output_name == "out.csv":
        assert output.read_text(encoding="utf-8").count("got bytes") == 2
    else:
        table = pq.read_table(next(output.glob("*.parquet")))
        assert all("got bytes" in error for error in table.column("error").to_pylist())
