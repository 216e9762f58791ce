"""Input that a user or a client controls, read with bounds: JSON that cannot crash, files that end.

Two hazards every reader of outside input shares, handled once here:

- JSON that parses into trouble: Python's `json` raises not only JSONDecodeError but ValueError
  (an integer of more than `sys.get_int_max_str_digits()` digits), RecursionError (thousands of
  nested brackets) and UnicodeDecodeError (bytes that are not UTF-8). `parse_json` turns every one
  into a `JsonInputError` with a message, so the HTTP service answers 400 and the batch scorer
  writes an error row instead of a 500 or an aborted run.
- Paths that are not regular files: a FIFO or a character device (`/dev/zero`, `/dev/urandom`)
  never ends, so a reader grows memory until it dies. `check_regular_file` refuses them with a
  message before anything is read, and `read_text_bounded` reads at most a given number of bytes.

Standard library only (torch-free, as everything in core).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from jbert.core.errors import UserError

# One decoder for every call: json.loads with keyword options would build a new one each time.
_DECODER = json.JSONDecoder()


class JsonInputError(ValueError):
    """JSON from outside that cannot be used; the message says what is wrong (never a traceback's words only)."""


def parse_json(data: str | bytes, what: str = "JSON") -> Any:
    """The value of one JSON document; JsonInputError for every way `json` can fail on hostile input.

    Bytes are decoded as UTF-8 (a BOM is allowed): json.loads(bytes) would guess UTF-16/32 from the
    first bytes, which no client of jbert sends. `what` names the input in messages ("body", "line 7").
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise JsonInputError(f"{what} is not valid UTF-8 (byte {err.start})") from None
    try:
        value, end = _DECODER.raw_decode(data, _skip_whitespace(data, 0))
    except json.JSONDecodeError as err:
        raise JsonInputError(f"{what} is not valid JSON: {err}") from None
    except RecursionError:
        raise JsonInputError(f"{what} nests arrays or objects too deeply to be read") from None
    except ValueError as err:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise JsonInputError(f"{what} holds a value Python cannot read: {err}") from None
    if _skip_whitespace(data, end) != len(data):
        raise JsonInputError(f"{what} is not valid JSON: extra data after the value (character {end})")
    return value


def _skip_whitespace(text: str, start: int) -> int:
    while start < len(text) and text[start] in " \t\n\r":
        start += 1
    return start


def file_kind(path: str | os.PathLike) -> str | None:
    """None for a regular file (or a link to one), else what it is: 'a directory', 'a FIFO (named pipe)', ..."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular_file(path: str | os.PathLike, what: str) -> None:
    """UserError unless `path` is a regular file: FIFOs and devices never end, so they are refused unread.

    `what` names the input in the message (e.g. "--api-key-file /run/key" or "input reviews.csv").
    A missing path is left to the caller's own reading, which says so in its words.
    """
    try:
        kind = file_kind(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise UserError(f"{what}: cannot read it ({err.strerror})") from None
    if kind is not None:
        raise UserError(f"{what} is {kind}, not a regular file; write the data to a file and give its path")


def read_text_bounded(path: str | os.PathLike, max_bytes: int, what: str, encoding: str = "utf-8") -> str:
    """A small text file read whole, refusing non-regular files and anything over `max_bytes` bytes."""
    check_regular_file(path, what)
    with open(Path(path), "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise UserError(f"{what} is larger than {max_bytes:,} bytes; is it the right file?")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise UserError(f"{what} is not {encoding} text") from None
