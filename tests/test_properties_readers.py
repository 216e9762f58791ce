"""Property tests: the readers keep every row of any CSV/TSV/JSONL file, or name the bad line.

Files are written the way users' tools write them (Python's csv and json modules, in utf-8,
utf-8 with BOM and cp932) with generated content: quotes, delimiters and line breaks inside cells,
BOM characters, cp932-only characters (① ㈱ 髙 ～), ragged rows, blank lines, unpaired surrogates
in JSON escapes. The readers must hand back exactly the rows written, each with the physical line
it starts on, or raise a UserError that names the line; rows are never dropped or merged silently.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from conftest import examples

from jbert.core import file_encodings, readers
from jbert.core.errors import UserError

ENCODINGS = ("utf-8", "utf-8-sig", "cp932")

# Characters that stress the format: delimiters, quotes, every line break csv and editors know,
# BOM, NUL, whitespace that .strip() removes, and Japanese text including cp932-only characters.
SPECIAL_CHARS = ',\t"\'\n\r \u3000\x00\ufeff\u2028\x85\x0b\x0c\\#;|'
JAPANESE_CHARS = "あいうアイウ日本語ｱｲｳﾂ｡ﾞ漢字ー。、「」『』（）"
CP932_ONLY_CHARS = "①②㈱㌔髙﨑～∥￢－≒∵ⅰ"  # NEC/IBM extensions that strict Shift_JIS rejects
OTHER_CHARS = "é€😀👨\u200d👩\U000E0100\u0301"  # not in cp932


def _alphabet(encoding: str) -> st.SearchStrategy[str]:
    chars = SPECIAL_CHARS + JAPANESE_CHARS + CP932_ONLY_CHARS
    if encoding == "cp932":
        return st.sampled_from([c for c in chars if _encodable(c, "cp932")])
    return st.one_of(
        st.sampled_from(chars + OTHER_CHARS),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    )


def _encodable(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _cells(encoding: str, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(_alphabet(encoding), max_size=max_size)


@st.composite
def delimited_files(draw):
    """(fmt, encoding, header, rows, writer options, leading blank lines) for a CSV or TSV file."""
    fmt = draw(st.sampled_from(["csv", "tsv"]))
    encoding = draw(st.sampled_from(ENCODINGS))
    options = {
        "lineterminator": draw(st.sampled_from(["\r\n", "\n"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
    }
    cells, names = _cells(encoding), _cells(encoding, 6)
    if options == {"lineterminator": "\n", "quoting": csv.QUOTE_MINIMAL}:
        # Python's csv.writer quotes only the characters of its lineterminator: with "\n" it writes
        # a "\r" unquoted, which no CSV reader can tell from a line break (the reader's answer to
        # such a file is test_unquoted_carriage_return_names_its_line).
        cells, names = (strategy.map(lambda cell: cell.replace("\r", "")) for strategy in (cells, names))
    width = draw(st.integers(1, 4))
    header = draw(st.lists(names, min_size=width, max_size=width))
    # A U+FEFF at the very start of a UTF-8 file is its byte order mark, by the Unicode standard.
    header[0] = header[0].lstrip("\ufeff")
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=width + 2), max_size=8))
    leading_blank_lines = draw(st.integers(0, 2))
    return fmt, encoding, header, rows, options, leading_blank_lines


def _write_delimited(path: Path, fmt, encoding, header, rows, options, leading_blank_lines) -> list[int]:
    """Write the file; return the physical line each data row starts on."""
    buffer = io.StringIO(newline="")
    buffer.write(options["lineterminator"] * leading_blank_lines)
    writer = csv.writer(buffer, **readers.csv_dialect(fmt), **options)
    writer.writerow(header)
    starts = []
    for row in rows:
        starts.append(buffer.getvalue().count("\n") + 1)
        writer.writerow(row)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return starts


def _clean_name(name: str) -> str:
    return name.replace("\ufeff", "").strip()


def _expected_delimited(header, rows, starts):
    """The rows the reader must yield, or the line of the first row it must reject."""
    columns = [_clean_name(name) for name in header]
    if len(set(columns)) < len(columns):
        return "duplicate header", None
    width = len(columns)
    expected = []
    for start, cells in zip(starts, rows):
        if not cells:
            continue  # a blank line holds no row
        if len(cells) > width:
            if any(cell.strip() for cell in cells[width:]):
                return "too many cells", start
            cells = cells[:width]
        row = dict(zip(columns, cells))
        row.update({name: None for name in columns[len(cells):]})
        expected.append((start, row))
    return "rows", expected


@pytest.fixture(scope="module")
def scratch_dir():
    with tempfile.TemporaryDirectory(prefix="jbert-props-") as directory:
        yield Path(directory)


def _ambiguous_with_utf8(content: bytes) -> bool:
    try:
        return not content.isascii() and bool(content.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def _read(path: Path, encoding: str):
    return list(readers.iter_rows(path, encoding=encoding))


@settings(max_examples=examples(300))
@given(delimited_files(), st.booleans())
@example(("csv", "utf-8", ["text", "label"], [[""], ["a", "b"]], {"lineterminator": "\r\n", "quoting": csv.QUOTE_MINIMAL}, 0), False)
@example(("tsv", "utf-8", ["text", "label"], [["x", "y"]], {"lineterminator": "\n", "quoting": csv.QUOTE_MINIMAL}, 1), True)
@example(("csv", "utf-8-sig", ["\ufefftext", "label"], [["x", "y"]], {"lineterminator": "\n", "quoting": csv.QUOTE_MINIMAL}, 0), True)
@example(("csv", "cp932", ["text"], [["ﾂ｡"]], {"lineterminator": "\n", "quoting": csv.QUOTE_MINIMAL}, 0), True)
def test_delimited_rows_kept_or_bad_line_named(scratch_dir, case, auto_encoding):
    fmt, encoding, header, rows, options, leading_blank_lines = case
    path = scratch_dir / f"data.{fmt}"
    starts = _write_delimited(path, fmt, encoding, header, rows, options, leading_blank_lines)
    note(f"file bytes: {path.read_bytes()!r}")
    outcome, expected = _expected_delimited(header, rows, starts)
    read_encoding = "auto" if auto_encoding else encoding
    if auto_encoding and encoding == "cp932" and _ambiguous_with_utf8(path.read_bytes()):
        # These bytes are also valid UTF-8 (half-width katakana pairs such as ﾂ｡ are the UTF-8 of
        # ¡): no detector can know which was meant, and UTF-8 is the documented choice.
        assert file_encodings.detect_encoding(path) == "utf-8"
        return
    if outcome == "rows":
        assert _read(path, read_encoding) == expected
        assert readers.read_columns(path, encoding=read_encoding) == [_clean_name(n) for n in header]
    elif outcome == "too many cells":
        with pytest.raises(UserError, match=rf", line {expected}: \d+ cells but the header has"):
            _read(path, read_encoding)
    else:
        with pytest.raises(UserError, match="repeats the column"):
            _read(path, read_encoding)


@pytest.mark.parametrize("content, line", [(b'text,label\n""\n\r,0\n', 3), (b'text,label\na,b\nx\ry,0\n', 3)])
def test_unquoted_carriage_return_names_its_line(tmp_path, content, line):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"data.csv, line {line}: .*carriage return"):
        _read(path, "utf-8")


# --------------------------------------------------------------------------- JSON lines and JSON arrays


def _json_text(encoding: str, ensure_ascii: bool) -> st.SearchStrategy[str]:
    if ensure_ascii:
        # Written as \uXXXX escapes, so any code point fits any encoding, unpaired surrogates included.
        return st.text(st.one_of(_alphabet("utf-8"), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)), max_size=8)
    return st.text(_alphabet(encoding), max_size=8)


def _json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), text,
        st.sampled_from([math.inf, -math.inf, math.nan]),  # json.dumps writes these; they are not JSON
    )
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                        max_leaves=6)


@st.composite
def jsonl_files(draw):
    """(encoding, ensure_ascii, lines): each line an object, another JSON value, or blank."""
    encoding = draw(st.sampled_from(ENCODINGS))
    ensure_ascii = draw(st.booleans())
    text = _json_text(encoding, ensure_ascii)
    values = _json_values(text)
    line = st.one_of(
        st.dictionaries(text, values, max_size=4),  # a row
        st.dictionaries(text, values, max_size=4),
        values,  # a scalar or list where a row belongs
        st.sampled_from(["", "   "]).map(_Blank),
    )
    return encoding, ensure_ascii, draw(st.lists(line, max_size=8)), draw(st.sampled_from(["\n", "\r\n"]))


class _Blank(str):
    """A blank line in a JSON lines file (written as-is, not as a JSON string)."""


def _bad_value(value) -> bool:
    """True when reading `value` back must fail: a non-finite number or an unpaired surrogate, at any depth."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, dict):
        return any(_bad_value(key) or _bad_value(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_bad_value(item) for item in value)
    return False


def _read_until_error(path: Path, encoding: str):
    """(rows yielded, the UserError that stopped the reader or None): rows before an error count too."""
    rows = []
    try:
        for row in readers.iter_rows(path, encoding=encoding):
            rows.append(row)
    except UserError as err:
        return rows, err
    return rows, None


@settings(max_examples=examples(200))
@given(jsonl_files(), st.booleans())
@example(("utf-8", True, [{"text": "a\ud800b"}], "\n"), False)  # an escaped unpaired surrogate
@example(("utf-8", True, [{"ok": 1}, {"x": [{"\udc00": 1}]}], "\n"), False)  # ... in a nested key
@example(("utf-8-sig", False, [{"\ufeffkey": "\ufeff"}, _Blank(""), {"k": "\ufeffv"}], "\n"), False)  # U+FEFF kept
def test_jsonl_rows_kept_or_bad_line_named(scratch_dir, case, auto_encoding):
    encoding, ensure_ascii, lines, newline = case
    path = scratch_dir / "data.jsonl"
    written = [line if isinstance(line, _Blank) else json.dumps(line, ensure_ascii=ensure_ascii) for line in lines]
    path.write_bytes(newline.join(written).encode(encoding) + (newline.encode() if written else b""))
    note(f"file bytes: {path.read_bytes()!r}")
    expected, error_line = [], None
    for line_number, (value, text) in enumerate(zip(lines, written), start=1):
        if isinstance(value, _Blank):
            continue
        if not isinstance(value, dict) or _bad_value(value):
            error_line = line_number
            break
        expected.append((line_number, value))
    if expected == [] and error_line is not None and isinstance(lines[error_line - 1], list):
        # A file whose first value is an array is read as one JSON array (a .json file): not this test's.
        return
    rows, error = _read_until_error(path, "auto" if auto_encoding else encoding)
    assert rows == expected
    if error_line is None:
        assert error is None, str(error)
    else:
        assert error is not None, f"line {error_line} should have been rejected"
        assert f"data.jsonl, line {error_line}:" in str(error)


@settings(max_examples=examples(100))
@given(st.sampled_from(ENCODINGS), st.booleans(), st.sampled_from([None, 0, 2]), st.data())
def test_json_array_rows_kept(scratch_dir, encoding, ensure_ascii, indent, data):
    text = _json_text(encoding, ensure_ascii).filter(lambda value: not _bad_value(value))
    values = _json_values(text).filter(lambda value: not _bad_value(value))
    objects = data.draw(st.lists(st.dictionaries(text, values, max_size=3), max_size=6))
    path = scratch_dir / "data.json"
    path.write_bytes(json.dumps(objects, ensure_ascii=ensure_ascii, indent=indent).encode(encoding))
    rows = list(readers.iter_rows(path, encoding=encoding))
    assert [row for _, row in rows] == objects
    line_numbers = [line for line, _ in rows]
    assert line_numbers == sorted(line_numbers) and all(line >= 1 for line in line_numbers)
    if indent is None:
        assert set(line_numbers) <= {1}


@pytest.mark.parametrize(
    "content, where",
    [
        # A hand-written TSV whose text starts with a quote: lenient csv parsing read the rest of
        # the file as one cell of one row, silently.
        ('text\tlabel\n"hello\tpos\nworld\tneg\nagain\tpos\n', "lines 2-4"),
        ('text\tlabel\nok\tpos\n"hi" she said\tneg\nmore\tpos\n', "line 3"),
    ],
)
def test_stray_quote_is_an_error_not_a_merge(tmp_path, content, where):
    path = tmp_path / "data.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=rf"data.tsv, {where}: malformed TSV .*starts with a double quote"):
        _read(path, "utf-8")


# --------------------------------------------------------------------------- encoding detection


@settings(max_examples=examples(200))
@given(st.binary(max_size=64) | st.text(_alphabet("utf-8"), max_size=20).map(lambda text: text.encode("utf-8")[:-1]))
def test_detection_of_any_bytes_is_an_encoding_or_a_user_error(sample):
    for complete in (True, False):
        try:
            encoding = file_encodings.detect_sample_encoding(sample, complete=complete)
        except UserError as err:
            assert "line" in str(err) or "UTF-16" in str(err)
            continue
        assert encoding in file_encodings.AUTO_ENCODINGS


@settings(max_examples=examples(200))
@given(st.sampled_from(ENCODINGS), st.text(min_size=1, max_size=40), st.integers(0, 3))
@example("cp932", "日本語①", 1)  # the sample ends inside ①
def test_detection_names_the_encoding_written(encoding, text, cut):
    text = "".join(char for char in text if _encodable(char, encoding)) or "日本"
    content = text.encode(encoding)
    if content.isascii():
        assert file_encodings.detect_sample_encoding(content) == "utf-8"
    elif encoding == "cp932" and _ambiguous_with_utf8(content):
        assert file_encodings.detect_sample_encoding(content) == "utf-8"  # see test_delimited_rows_kept_...
    else:
        assert file_encodings.detect_sample_encoding(content) == encoding
    # A stream sniffed in blocks: a sample ending inside its last character must be read as the
    # characters before it are (the BOM itself always fits: samples are kilobytes).
    sample = content[: max(len(content) - cut, 3 if encoding == "utf-8-sig" else 0)]
    whole = max(k for k in range(len(text) + 1) if sample.startswith(text[:k].encode(encoding)))
    prefix = text[:whole].encode(encoding)
    if encoding == "utf-8-sig" and not whole:
        prefix = codecs.BOM_UTF8
    expected = file_encodings.detect_sample_encoding(prefix) if prefix.strip(bytes(range(128))) or encoding == "utf-8-sig" else None
    detected = file_encodings.detect_sample_encoding(sample, complete=False)
    if expected is not None:
        assert detected == expected, (sample, prefix)
    else:  # only ASCII before the cut: the cut bytes alone decide, and both readings are valid so far
        assert detected in file_encodings.AUTO_ENCODINGS
