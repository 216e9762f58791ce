"""MeCab dictionaries and word splitting, one copy for training and serving.

`mecab_tagger_options` / `create_mecab_tagger` start fugashi exactly as transformers'
`MecabTokenizer` does for a given `mecab_dic` and `mecab_option` (a dictionary path needs
`-r /dev/null`, or MeCab looks for a mecabrc that the pip dictionaries do not ship), so the
vocabulary built at training time and the ids computed at serving time come from the same words.
"""

from __future__ import annotations

import os
import shlex
import unicodedata
from pathlib import Path
from typing import Sequence

from jbert.core.errors import UserError

# Named dictionaries: pip package that provides them, and how to install it.
MECAB_DICTIONARIES = {
    "unidic_lite": ("unidic_lite", "pip install unidic-lite"),
    "unidic": ("unidic", "pip install unidic && python -m unidic download"),
    "ipadic": ("ipadic", "pip install ipadic"),
}

# --------------------------------------------------------------------------- MeCab dictionaries


def mecab_dictionary_dir(mecab_dic: str) -> Path:
    """Directory of a MeCab dictionary given by name (unidic_lite, unidic, ipadic) or path.

    A missing dictionary is a UserError that says how to install it, and that unidic_lite is the
    offline alternative.
    """
    if mecab_dic in MECAB_DICTIONARIES:
        module_name, install = MECAB_DICTIONARIES[mecab_dic]
        offline_hint = (
            "" if mecab_dic == "unidic_lite" else
            " Offline alternative: pass --mecab_dic unidic_lite (the small UniDic bundled with jbert's "
            "requirements; token splits may differ slightly from the model's pre-training)."
        )
        try:
            module = __import__(module_name)
        except ModuleNotFoundError:
            raise UserError(
                f"MeCab dictionary {mecab_dic!r} is not installed. Install it with: {install}.{offline_hint}"
            ) from None
        dic_dir = Path(module.DICDIR)
        if not dic_dir.is_dir():
            # The `unidic` pip package ships without its dictionary files until `python -m unidic download`.
            raise UserError(
                f"MeCab dictionary {mecab_dic!r}: the package is installed but its dictionary files are not "
                f"({dic_dir} is missing). Download them with: {install}.{offline_hint}"
            )
        return dic_dir
    dic_dir = Path(os.path.expanduser(str(mecab_dic)))
    if not dic_dir.is_dir():
        raise UserError(
            f"MeCab dictionary {mecab_dic!r} is neither a known name ({', '.join(MECAB_DICTIONARIES)}) nor an "
            "existing directory; pass --mecab_dic unidic_lite, unidic, ipadic or the path of a compiled MeCab "
            "dictionary (the directory holding sys.dic)"
        )
    if not (dic_dir / "sys.dic").is_file():
        raise UserError(
            f"MeCab dictionary directory {dic_dir} has no sys.dic; give the directory of a compiled MeCab "
            "dictionary (e.g. the 'dicdir' of unidic-lite or /var/lib/mecab/dic/ipadic-utf8)"
        )
    return dic_dir


def is_named_mecab_dictionary(mecab_dic: str | None) -> bool:
    """True for the dictionary names transformers' MecabTokenizer understands itself."""
    return mecab_dic in MECAB_DICTIONARIES


def mecab_tagger_options(mecab_dic: str | None = "unidic_lite", mecab_option: str | None = None) -> str:
    """The option string MeCab starts with, built exactly as transformers' MecabTokenizer does.

    A directory path is also accepted as `mecab_dic`: MeCab then gets `-d PATH -r RC` where RC is the
    directory's own mecabrc if it has one, else /dev/null, because MeCab refuses to start without a
    resource file and a user dictionary directory usually has none.
    """
    mecab_option = mecab_option or ""
    if mecab_dic is None:
        return mecab_option
    dic_dir = mecab_dictionary_dir(mecab_dic)
    if is_named_mecab_dictionary(mecab_dic):
        mecabrc = os.path.join(str(dic_dir), "mecabrc")
    else:
        mecabrc = str(dic_dir / "mecabrc") if (dic_dir / "mecabrc").is_file() else os.devnull
    return f'-d "{dic_dir}" -r "{mecabrc}" ' + mecab_option


def create_mecab_tagger(mecab_dic: str | None = "unidic_lite", mecab_option: str | None = None):
    """Start a fugashi `GenericTagger` with a dictionary; failures become UserErrors that say how to fix."""
    try:
        import fugashi
    except ModuleNotFoundError:
        raise UserError("fugashi (MeCab for Python) is not installed; install it with: pip install fugashi") from None
    options = mecab_tagger_options(mecab_dic, mecab_option)
    try:
        return fugashi.GenericTagger(options)
    except RuntimeError as err:
        raise UserError(
            f"MeCab failed to start with options {options!r} ({err}). Check --mecab_dic (a name: "
            f"{', '.join(MECAB_DICTIONARIES)}; or a compiled dictionary directory) and mecab_option."
        ) from None


# mecab_option words that only pick dictionaries; anything else (output formats, -a, -N ...) keeps
# the word splitter on the node path, whose surfaces cannot be changed by output options.
_DICTIONARY_ONLY_OPTIONS = ("-d", "-r", "-u", "--dicdir", "--rcfile", "--userdic")


def _only_dictionary_options(mecab_option: str | None) -> bool:
    try:
        words = shlex.split(mecab_option or "")
    except ValueError:
        return False
    expect_value = False
    for word in words:
        if expect_value:
            expect_value = False
            continue
        if word in _DICTIONARY_ONLY_OPTIONS:
            expect_value = True
        elif not word.startswith(_DICTIONARY_ONLY_OPTIONS) or word.startswith("--") and "=" not in word:
            return False
    return True


class MecabWordSplitter:
    """Words of a text exactly as transformers' `MecabTokenizer.tokenize` returns them."""

    def __init__(
        self,
        mecab_dic: str | None = "unidic_lite",
        mecab_option: str | None = None,
        normalize_text: bool = True,
        do_lower_case: bool = False,
        never_split: Sequence[str] = (),
    ):
        self._options = (mecab_dic, mecab_option)
        self.tagger = create_mecab_tagger(mecab_dic, mecab_option)
        self.normalize_text = normalize_text
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split)
        # Wakati output ("w1 w2 ... ") split on whitespace equals every surface split on whitespace,
        # which is all WordPiece looks at, and it skips building one Python object per word.
        # Lower-casing is per surface (with never_split), so it needs the surfaces themselves.
        self._wakati = None
        if not do_lower_case and _only_dictionary_options(mecab_option):
            self._wakati = create_mecab_tagger(mecab_dic, ((mecab_option or "") + " -Owakati").strip())

    def split(self, text: str) -> list[str]:
        """MeCab surfaces of `text` (after NFKC if configured; lower-cased if configured)."""
        if self.normalize_text:
            text = unicodedata.normalize("NFKC", text)
        surfaces = [node.surface for node in self.tagger(text)]
        if self.do_lower_case:
            never_split = self.never_split
            surfaces = [s if s in never_split else s.lower() for s in surfaces]
        return surfaces

    def split_pieces(self, text: str) -> list[str]:
        """The surfaces of `split(text)`, each split again on whitespace, as WordpieceTokenizer does."""
        if self._wakati is None:
            return [piece for surface in self.split(text) for piece in surface.split()]
        if self.normalize_text:
            text = unicodedata.normalize("NFKC", text)
        return self._wakati.parse(text).split()
