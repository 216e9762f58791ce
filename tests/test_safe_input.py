"""Outside input read with bounds: every way `json` fails becomes one JsonInputError; FIFOs and devices are refused unread."""

from __future__ import annotations

import os

import pytest

from jbert.core.errors import UserError
from jbert.core.safe_input import JsonInputError, check_regular_file, parse_json, read_text_bounded


@pytest.mark.parametrize("data, expected", [
    (b'{"inputs": ["a"]}', {"inputs": ["a"]}),
    ("  [1, 2]\n", [1, 2]),
    (b'\xef\xbb\xbf{"x": []}', {"x": []}),  # a BOM is allowed
    ('"\\ud800"', "\ud800"),  # valid JSON; whoever tokenizes it decides (tokenization.encoded.check_inputs)
])
def test_valid_json_parses(data, expected):
    assert parse_json(data) == expected


@pytest.mark.parametrize("data, words", [
    (b"\xff\xfe{}", "not valid UTF-8"),
    ("[" * 100_000, "nests arrays or objects too deeply"),  # RecursionError inside json
    ("1" * 5_000, "Python cannot read"),  # ValueError: more digits than int() converts
    ('{"a": 1} trailing', "extra data"),
    ("", "not valid JSON"),
    ('{"a": ', "not valid JSON"),
])
def test_every_json_failure_is_one_error_with_a_message(data, words):
    with pytest.raises(JsonInputError, match=words):
        parse_json(data, "body")


def test_fifo_device_and_directory_are_refused_unread(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever: the check must not open it
    for path, kind in ((fifo, "FIFO"), ("/dev/zero", "character device"), (tmp_path, "directory")):
        with pytest.raises(UserError, match=f"is a {kind}"):
            check_regular_file(path, f"input {path}")
    check_regular_file(tmp_path / "missing.csv", "input")  # left to the reader, which names it missing


def test_bounded_read_refuses_a_file_over_its_limit(tmp_path):
    small, big = tmp_path / "key", tmp_path / "big"
    small.write_text("s3cret-key\n", encoding="utf-8")
    big.write_bytes(b"x" * 5000)
    assert read_text_bounded(small, 4096, "--api-key-file key") == "s3cret-key\n"
    with pytest.raises(UserError, match="larger than 4,096 bytes"):
        read_text_bounded(big, 4096, "--api-key-file big")
    with pytest.raises(UserError, match="character device"):
        read_text_bounded("/dev/zero", 4096, "--api-key-file /dev/zero")
