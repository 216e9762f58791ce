"""Which encoding a text file is in (utf-8, utf-8 with BOM, cp932) and its lines decoded one by one.

The readers' half (`jbert.core.readers` reads rows from what this decodes): detection reads only the start of a
file, and decoding works line by line so that every decoding error names its line. Standard
library only (torch-free, as everything in core).
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterator

from jbert.core.errors import UserError

AUTO_ENCODINGS = ("utf-8-sig", "utf-8", "cp932")

# How much of a file `detect_encoding` reads. Scoring files can be many GB; the first 16 MiB decide
# reliably, and a file that changes encoding later still fails with its exact line number.
ENCODING_SAMPLE_BYTES = 16 * 1024 * 1024

_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def detect_encoding(path: str | os.PathLike) -> str:
    """Return the encoding of a text file: "utf-8-sig" (BOM), "utf-8" or "cp932" (Shift_JIS).

    UTF-8 is tried first because valid UTF-8 Japanese text almost never decodes as cp932 and vice
    versa. A file that is neither (or UTF-16, which Excel's "Unicode text" writes) is a UserError.
    """
    path = Path(path)
    check_is_file(path)
    with open(path, "rb") as handle:
        sample = handle.read(ENCODING_SAMPLE_BYTES)
        at_end = not handle.read(1)
    return detect_sample_encoding(sample, complete=at_end, where=str(path))


def detect_sample_encoding(sample: bytes, complete: bool = True, where: str = "the input") -> str:
    """The encoding of the first bytes of a stream (e.g. standard input): as `detect_encoding`.

    `complete` says the sample is the whole input; otherwise a multi-byte character cut off at
    its end is not held against the sample. `where` names the input in error messages.
    """
    if sample.startswith(_UTF8_BOM):
        return "utf-8-sig"
    if sample.startswith(_UTF16_BOMS):
        raise UserError(
            f"{where} is UTF-16 encoded (Excel's 'Unicode text' export); save it as "
            "'CSV UTF-8' or convert it, e.g. `iconv -f UTF-16 -t UTF-8 in.txt > out.txt`"
        )
    if _decodes(sample, "utf-8", complete):
        return "utf-8"
    if _mostly_utf8(sample):
        # cp932 often "decodes" UTF-8 Japanese into mojibake without complaint; a UTF-8 file with
        # a few broken bytes is read as UTF-8 so that the error names the broken line.
        return "utf-8"
    if _decodes(sample, "cp932", complete):
        return "cp932"
    line_number, bad = _first_undecodable_line(sample, "utf-8")
    raise UserError(
        f"{where}, line {line_number}: the file is neither UTF-8 nor cp932 (Shift_JIS) (bytes {bad!r}); "
        "pass --encoding with its real encoding (e.g. --encoding euc_jp) or re-save it as UTF-8"
    )


def resolve_encoding(path: str | os.PathLike, encoding: str | None) -> str:
    """Turn "auto"/None into the detected encoding; check that a named encoding exists.

    "shift_jis" (and its aliases) is read as cp932, its Microsoft superset: what Japanese users
    call Shift_JIS is what Excel writes, with ① ㈱ and NEC/IBM kanji that strict Shift_JIS rejects.
    """
    if encoding in (None, "", "auto"):
        return detect_encoding(path)
    try:
        codec_name = codecs.lookup(encoding).name
    except LookupError:
        raise UserError(
            f"--encoding {encoding!r} is not a known encoding; use auto, utf-8, utf-8-sig, cp932 or shift_jis"
        ) from None
    check_is_file(Path(path))
    return "cp932" if codec_name == "shift_jis" else encoding



def check_is_file(path: Path) -> None:
    """UserError unless `path` is an existing file (not missing, not a directory)."""
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a CSV/TSV/JSON lines file")


def decoded_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Yield (line_number, text line with its line ending) decoded line by line.

    Decoding each line separately (instead of a text-mode file) is what lets a decoding error
    report its line. Splitting the bytes on b"\\n" is safe for UTF-8 and cp932: neither uses the
    byte 0x0A inside a multi-byte character.
    """
    codec_name = codecs.lookup(encoding).name
    strip_bom = codec_name in ("utf-8", "utf-8-sig")
    # The BOM is removed by hand from line 1 only: the utf-8-sig codec would strip a U+FEFF from the
    # start of every line decoded on its own, changing cells that begin with one.
    line_encoding = "utf-8" if strip_bom else encoding
    alternatives = [hint for name, hint in (("cp932", "--encoding cp932 (Japanese Excel / Shift_JIS)"),
                                            ("utf-8", "--encoding utf-8")) if name != codec_name]
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if line_number == 1 and strip_bom and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            try:
                yield line_number, raw.decode(line_encoding)
            except UnicodeDecodeError as err:
                bad = raw[max(err.start - 2, 0): err.end + 2]
                raise UserError(
                    f"{path}, line {line_number}: bytes {bad!r} cannot be decoded as {encoding}; "
                    f"the file (or this part of it) uses another encoding: pass {', '.join(alternatives)} "
                    "or --encoding with the file's real encoding"
                ) from None


def _decodes(sample: bytes, encoding: str, at_end: bool) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        # final only at the real end: a sample may stop in the middle of a multi-byte character
        decoder.decode(sample, final=at_end)
    except UnicodeDecodeError:
        return False
    return True


def _mostly_utf8(sample: bytes) -> bool:
    """True when UTF-8 decodes nearly all non-ASCII text of the sample (and fails only here and there)."""
    text = sample.decode("utf-8", errors="replace")
    broken = text.count("\ufffd")
    non_ascii = sum(1 for char in text if ord(char) > 127) - broken
    return non_ascii >= 3 * broken  # cp932 text read as UTF-8 is nearly all U+FFFD


def _first_undecodable_line(sample: bytes, encoding: str) -> tuple[int, bytes]:
    """(1-based line number, a few bytes around the problem) of the first line that fails to decode."""
    for line_number, raw in enumerate(sample.split(b"\n"), start=1):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as err:
            return line_number, raw[max(err.start - 2, 0): err.end + 2]
    return 1, sample[:8]
