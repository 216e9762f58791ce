"""Text clean-up shared by training and serving (torch-free, one copy of the logic).

The same `NormalizationConfig` is saved with every model (`jbert.json`) and applied again at
serving time, so a model never sees differently cleaned text in production than in training.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, fields

# Control (Cc) and format (Cf) characters except the whitespace we normalise separately.
# Zero-width joiners etc. (Cf) are invisible in Excel exports and only add [UNK]s.
_WHITESPACE_RE = re.compile(r"[\s\u3000\u00a0\u200b]+")


def _is_removable_control(char: str) -> bool:
    if char in "\t\n\r":
        return False  # handled as whitespace, so words on either side stay apart
    category = unicodedata.category(char)
    if category == "Cc":
        return True
    # Keep ZWJ so emoji sequences survive; drop BOMs, soft hyphens, bidi marks.
    return category == "Cf" and char != "\u200d"


@dataclass(frozen=True)
class NormalizationConfig:
    """Which clean-up steps run on every text, in training and in serving."""

    nfkc: bool = True  # Unicode NFKC: full-width ASCII -> half-width, half-width kana -> full-width
    remove_control: bool = True  # drop control/format characters (BOM, NUL, bidi marks, ...)
    normalize_whitespace: bool = True  # \n \t \r \u3000 and runs of spaces -> one space, trimmed

    def to_dict(self) -> dict:
        """Plain dict for JSON/YAML."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "NormalizationConfig":
        """Build from a saved dict, ignoring unknown keys written by newer versions."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: bool(v) for k, v in (values or {}).items() if k in known})


def normalize_text(text: str, config: NormalizationConfig = NormalizationConfig()) -> str:
    """Apply the configured clean-up steps to one text."""
    if config.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if config.remove_control:
        text = "".join(ch for ch in text if not _is_removable_control(ch))
    if config.normalize_whitespace:
        text = _WHITESPACE_RE.sub(" ", text).strip()
    return text
