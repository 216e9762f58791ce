"""Juman++-segmented tokenizers: found from their settings, and refused with an install hint where Juman++ is missing.

Some Japanese encoders split words with Juman++ before their subwords: `BertJapaneseTokenizer` with
`word_tokenizer_type: jumanpp` (through the rhoknp package), and the DeBERTa-v2 Japanese models of
ku-nlp whose "-with-auto-jumanpp" tokenizers run it themselves (remote code). Both need the
`jumanpp` program on PATH, which no Python package installs. Where it is there, these tokenizers load
through transformers (training, and serving's reference fallback); where it is not, the user gets one
clear message saying what to install instead of an error from deep inside a tokenizer.
Standard library only.
"""

from __future__ import annotations

import importlib.util
import shutil

from jbert.core.errors import UserError

JUMANPP_INSTALL_HINT = (
    "install Juman++ 2.x (build it from source as its README says: https://github.com/ku-nlp/jumanpp, "
    "so that `jumanpp` is on PATH) and the rhoknp package (pip install rhoknp)"
)


def uses_jumanpp(config: dict) -> bool:
    """Whether a tokenizer_config.json (with special_tokens_map.json applied) asks for Juman++ word splitting."""
    if config.get("word_tokenizer_type") == "jumanpp" and config.get("do_word_tokenize", True):
        return True
    names = [str(config.get("tokenizer_class") or "")]
    names += [str(entry) for entry in (config.get("auto_map") or {}).get("AutoTokenizer", []) or []]
    return any("jumanpp" in name.lower() for name in names)


def require_jumanpp(config: dict, where: str) -> None:
    """Raise UserError (exit 2) when `config` needs Juman++ and the program or rhoknp is missing here."""
    if not uses_jumanpp(config):
        return
    missing = []
    if shutil.which("jumanpp") is None:
        missing.append("the jumanpp program (not on PATH)")
    if importlib.util.find_spec("rhoknp") is None:
        missing.append("the rhoknp package")
    if missing:
        raise UserError(
            f"the tokenizer of {where} splits words with Juman++, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing on this machine: {JUMANPP_INSTALL_HINT}. "
            "Juman++ tokenizers have no torch-free fast path: serving them also needs transformers"
        )
