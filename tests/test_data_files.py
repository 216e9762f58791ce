"""Reading data files: every input format and encoding, the tabular reader's rows and line numbers.

The data stage's tests of what is built on these rows (tasks, labels, splits) are in test_data.py.
"""

from __future__ import annotations

import json

import datasets
import pytest

from conftest import ROWS, data_config, decoded, write_csv, write_jsonl

from jbert.core import file_encodings, readers
from jbert.data.prepare import prepare_data
from jbert.core.errors import UserError

# --------------------------------------------------------------------------- formats and encodings


@pytest.mark.parametrize("fmt", ["csv", "tsv", "txt", "jsonl", "json_array", "parquet", "save_to_disk"])
def test_every_input_format_gives_the_same_data(tmp_path, fmt):
    rows = ROWS * 2
    if fmt in ("csv", "tsv", "txt"):
        path = write_csv(tmp_path / f"train.{fmt}", rows, delimiter="," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        path = write_jsonl(tmp_path / "train.jsonl", rows)
    elif fmt == "json_array":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "train.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    validation = write_csv(tmp_path / "validation.csv", ROWS)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(validation)))
    assert data.problem_type == "single_label_classification"
    assert data.label_names == ["negative", "neutral", "positive"]
    assert decoded(data) == [(row["text"], row["label"]) for row in rows]
    assert data.stats["train"]["rows_read"] == len(rows) == data.stats["train"]["rows_used"]
    assert data.train.column_names == ["text", "labels"]


@pytest.mark.parametrize("encoding,expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("cp932", "cp932"), ("shift_jis", "cp932")])
def test_encodings_are_detected_and_read(tmp_path, encoding, expected):
    rows = ROWS + [{"text": "ﾊﾝｶｸｶﾅと①丸数字", "label": "neutral"}] if encoding == "cp932" else ROWS
    path = write_csv(tmp_path / "train.csv", rows, encoding=encoding)
    assert file_encodings.detect_encoding(path) == expected
    assert readers.read_columns(path) == ["text", "label"]  # no BOM glued to the first column name
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    texts = [text for text, _ in decoded(data)]
    assert texts[:len(ROWS)] == [row["text"] for row in ROWS]
    assert data.stats["train"]["encoding"] == expected


@pytest.mark.parametrize("name", ["cp932", "shift_jis", "sjis", "Shift-JIS"])
def test_explicit_encoding_is_used(tmp_path, name):
    rows = ROWS + [{"text": "①㈱の商品", "label": "positive"}]  # Excel's cp932 characters outside strict Shift_JIS
    path = write_csv(tmp_path / "train.csv", rows, encoding="cp932")
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), encoding=name))
    assert decoded(data)[0][0] == ROWS[0]["text"]
    assert decoded(data)[-1][0] == "1(株)の商品"  # after NFKC
    assert data.stats["train"]["encoding"] == "cp932"


def test_unknown_encoding_name(tmp_path):
    path = write_csv(tmp_path / "train.csv", ROWS)
    with pytest.raises(UserError, match="'latin-9000' is not a known encoding"):
        prepare_data(data_config(tmp_path, train_file=str(path), encoding="latin-9000"))


def test_undecodable_bytes_name_file_line_and_encoding_hint(tmp_path):
    path = write_csv(tmp_path / "train.csv", ROWS, encoding="utf-8")
    with open(path, "ab") as handle:
        handle.write("文字化け,positive\n".encode("cp932"))  # line 8 is Shift_JIS in a UTF-8 file
    with pytest.raises(UserError) as err:
        prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), encoding="utf-8"))
    message = str(err.value)
    assert str(path) in message and "line 8" in message and "--encoding" in message


def test_auto_detection_keeps_a_utf8_file_with_one_broken_line_utf8(tmp_path):
    path = write_csv(tmp_path / "train.csv", ROWS * 3)
    with open(path, "ab") as handle:
        handle.write("壊れた行,positive\n".encode("cp932"))  # line 20; cp932 would read the rest as mojibake
    assert file_encodings.detect_encoding(path) == "utf-8"
    with pytest.raises(UserError, match=r"line 20: .*--encoding cp932"):
        list(readers.iter_rows(path))


def test_auto_detection_of_a_file_neither_utf8_nor_cp932(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\n\x81\x7f\xff\xfe,a\n")
    with pytest.raises(UserError, match=r"line 2.*--encoding"):
        file_encodings.detect_encoding(path)


def test_detect_sample_encoding_for_streams():
    text = "価格は１，９８０円でした。ｻｲｺｰ\n" * 3
    assert file_encodings.detect_sample_encoding(text.encode("utf-8")) == "utf-8"
    assert file_encodings.detect_sample_encoding(text.encode("cp932")) == "cp932"
    assert file_encodings.detect_sample_encoding(b"\xef\xbb\xbf" + text.encode("utf-8")) == "utf-8-sig"
    cut = text.encode("utf-8")[:-2]  # a sample that stops inside a multi-byte character
    assert file_encodings.detect_sample_encoding(cut, complete=False) == "utf-8"
    with pytest.raises(UserError, match="<stdin>.*UTF-16"):
        file_encodings.detect_sample_encoding(text.encode("utf-16"), where="<stdin>")


def test_utf16_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("text\tlabel\nよい\tpos\n", encoding="utf-16")
    with pytest.raises(UserError, match="UTF-16"):
        file_encodings.detect_encoding(path)


# --------------------------------------------------------------------------- tabular reader


def test_quoted_line_breaks_and_line_numbers(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('text,label\n"一行目\n二行目",a\n\nふつう,b\n"引用""符""",c\n', encoding="utf-8")
    rows = list(readers.iter_rows(path))
    assert rows == [
        (2, {"text": "一行目\n二行目", "label": "a"}),
        (5, {"text": "ふつう", "label": "b"}),
        (6, {"text": '引用"符"', "label": "c"}),
    ]


def test_short_rows_get_none_and_long_rows_are_an_error(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,label\nだけ\n多すぎ,a,b\n", encoding="utf-8")
    rows = readers.iter_rows(path)
    assert next(rows) == (2, {"text": "だけ", "label": None})
    with pytest.raises(UserError, match=r"line 3: 3 cells but the header has 2"):
        next(rows)


def test_trailing_empty_cells_from_excel_are_ignored(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,label\nよい,a,,\n", encoding="utf-8")
    assert list(readers.iter_rows(path)) == [(2, {"text": "よい", "label": "a"})]


@pytest.mark.parametrize("content,pattern", [
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', r"line 2: not valid JSON"),
    ('{"text": "a", "label": "x"}\n\n["b", "y"]\n', r"line 3: a JSON list where an object"),
    ('{"text": "a", "label": NaN}\n', r"line 1: not valid JSON"),
    ('{"text": "a", "label": "x"}\n' + "[" * 100_000 + "\n", r"line 2: JSON nested too deeply"),  # RecursionError in json
    ('{"text": "a", "label": "x"}\n{"text": ' + "1" * 5_000 + "}\n", r"line 2: not valid JSON"),  # int digits limit
    ('[{"text": "a", "label": "x"},\n' + "[" * 100_000 + "]\n", r"line 2: JSON nested too deeply"),  # in a .json array
])
def test_bad_json_lines_name_their_line(tmp_path, content, pattern):
    path = tmp_path / "rows.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=pattern):
        list(readers.iter_rows(path))


def test_json_array_is_streamed_with_line_numbers(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"text": "a",\n   "label": 1},\n  {"text": "b", "label": 2}\n]\n', encoding="utf-8")
    assert list(readers.iter_rows(path)) == [(2, {"text": "a", "label": 1}), (4, {"text": "b", "label": 2})]
    path.write_text('[{"text": "a"},\n{"text": "b"}', encoding="utf-8")
    with pytest.raises(UserError, match="not closed"):
        list(readers.iter_rows(path))
    path.write_text('\n[{"text": "a"},\n {"text": "b",, "label": 1},\n{"text": "c"}]', encoding="utf-8")
    rows = readers.iter_rows(path)
    assert next(rows) == (2, {"text": "a"})
    with pytest.raises(UserError, match="line 3: not valid JSON"):
        next(rows)


def test_iter_rows_streams_without_reading_everything(tmp_path):
    path = tmp_path / "big.tsv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("text\tlabel\n")
        for i in range(50_000):
            handle.write(f"文{i}\tx\n")
        handle.write("壊れ\t\"未閉じ\n")
    rows = readers.iter_rows(path)
    assert next(rows) == (2, {"text": "文0", "label": "x"})  # the first row comes before the end is read


@pytest.mark.parametrize("name", ["data.xlsx", "data"])
def test_unknown_extension(tmp_path, name):
    path = tmp_path / name
    path.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"\.csv.*\.tsv"):
        readers.detect_format(path)


def test_missing_file_in_tabular(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(readers.iter_rows(tmp_path / "nope.csv"))
