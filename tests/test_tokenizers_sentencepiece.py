"""SentencePiece models (XLM-R, DeBERTa-v2/v3, T5-style rinna): served torch-free with the SentencePiece ids.

Each test trains a small Unigram SentencePiece model WITH byte fallback (as DeBERTa-v3 Japanese has)
on Japanese text, saves it as a slow transformers tokenizer directory (only the .model file, as such
models ship) and checks that what jbert serves, through a tokenizer.json run by the `tokenizers`
library, gives exactly the ids of transformers' slow SentencePiece tokenizer: on project-written
sentences always, and on every sentence of ../shared/data when it is there.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import warnings
from pathlib import Path

import pytest

from conftest import SHARED_DATA, TEXTS, topic_rows, write_tiny_japanese_tokenizer
from jbert.core.errors import UserError
from jbert.tokenization import FastJsonTokenizer, load_serving_tokenizer, load_tokenizer
from jbert.tokenization.sentencepiece_json import CHECK_SENTENCES, id_mismatches, main, write_tokenizer_json

spm = pytest.importorskip("sentencepiece")

FIXTURE_TEXTS = [row["text"] for row in topic_rows(60, seed=3)] + TEXTS + list(CHECK_SENTENCES)
# Slow tokenizer class -> (file name it loads, SentencePiece special-piece layout of that family)
FAMILIES = {
    "XLMRobertaTokenizer": ("sentencepiece.bpe.model", dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)),
    "DebertaV2Tokenizer": ("spm.model", dict(pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]",
                                              bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
                                              user_defined_symbols=["[MASK]"])),
    "T5Tokenizer": ("spiece.model", dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)),
}


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="The sentencepiece tokenizer that you are converting")


def _slow_directory(directory: Path, family: str, texts: list[str], vocab_size: int = 400) -> Path:
    """A slow-tokenizer directory with only the SentencePiece file (no tokenizer.json), as hub models ship."""
    import transformers

    file_name, layout = FAMILIES[family]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.98, byte_fallback=True, minloglevel=2, num_threads=1, **layout,
    )
    directory.mkdir(parents=True)
    (directory / file_name).write_bytes(model.getvalue())
    getattr(transformers, family)(vocab_file=str(directory / file_name)).save_pretrained(directory)
    assert not (directory / "tokenizer.json").exists()
    return directory


def _slow(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), use_fast=False)


def _served_model_dir(slow_dir: Path, model_dir: Path):
    """What training writes into the model directory (jbert's load_tokenizer, save_pretrained) and serving loads."""
    load_tokenizer(str(slow_dir)).save_pretrained(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast path, not a fallback
        return load_serving_tokenizer(model_dir)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_trained_model_dir_serves_the_sentencepiece_ids(tmp_path, family):
    _quiet()
    slow_dir = _slow_directory(tmp_path / "slow", family, FIXTURE_TEXTS)
    served = _served_model_dir(slow_dir, tmp_path / "model")
    assert isinstance(served, FastJsonTokenizer)
    assert not id_mismatches(_slow(slow_dir), served, FIXTURE_TEXTS)
    # Byte fallback is used (so the check can fail): a rare character becomes byte pieces, not unknown.
    assert len(served.encode_batch(["龘"], max_length=None)[0].input_ids) > 3


def test_transformers_own_conversion_loses_byte_fallback(tmp_path):
    """Why jbert rebuilds: AutoTokenizer's converted fast tokenizer gives [UNK] where SentencePiece gives bytes."""
    from transformers import AutoTokenizer

    _quiet()
    slow_dir = _slow_directory(tmp_path / "slow", "DebertaV2Tokenizer", FIXTURE_TEXTS)
    plain_fast = AutoTokenizer.from_pretrained(str(slow_dir))
    assert id_mismatches(_slow(slow_dir), plain_fast, FIXTURE_TEXTS)
    assert not id_mismatches(_slow(slow_dir), load_tokenizer(str(slow_dir)), FIXTURE_TEXTS)


def test_pairs_and_truncation_equal_transformers_fast(tmp_path):
    _quiet()
    slow_dir = _slow_directory(tmp_path / "slow", "DebertaV2Tokenizer", FIXTURE_TEXTS)
    served = _served_model_dir(slow_dir, tmp_path / "model")
    reference = load_tokenizer(str(tmp_path / "model"))
    firsts, seconds = FIXTURE_TEXTS, list(reversed(FIXTURE_TEXTS))
    for max_length in (8, 64):
        expected = reference(firsts, seconds, truncation=True, max_length=max_length)
        got = served.encode_batch(firsts, seconds, max_length=max_length)
        assert [e.input_ids for e in got] == expected["input_ids"]
        assert [e.token_type_ids for e in got] == expected["token_type_ids"]


def test_write_tokenizer_json_for_a_sentencepiece_only_directory(tmp_path):
    _quiet()
    slow_dir = _slow_directory(tmp_path / "slow", "XLMRobertaTokenizer", FIXTURE_TEXTS)
    assert main([str(slow_dir)]) == 0
    served = load_serving_tokenizer(slow_dir)
    assert isinstance(served, FastJsonTokenizer)
    assert not id_mismatches(_slow(slow_dir), served, FIXTURE_TEXTS)
    with pytest.raises(UserError, match="exists already"):
        write_tokenizer_json(slow_dir)
    assert main(["--help"]) == 2


def test_sentencepiece_only_directory_without_transformers_is_a_user_error(tmp_path, monkeypatch):
    _quiet()
    slow_dir = _slow_directory(tmp_path / "slow", "T5Tokenizer", FIXTURE_TEXTS)
    monkeypatch.setitem(sys.modules, "transformers", None)  # a serving-only install
    with pytest.raises(UserError, match="sentencepiece_json"):
        load_serving_tokenizer(slow_dir)


def test_jumanpp_tokenizer_says_what_to_install(tmp_path, monkeypatch):
    from transformers import BertJapaneseTokenizer

    directory = tmp_path / "jumanpp"
    write_tiny_japanese_tokenizer(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "word_tokenizer_type": "jumanpp"}))
    assert BertJapaneseTokenizer  # the class that would need Juman++
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for load in (load_serving_tokenizer, lambda d: load_tokenizer(str(d))):
        with pytest.raises(UserError, match="jumanpp program.*pip install rhoknp"):
            load(directory)
    # With the program on PATH, what is still missing is named alone.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "jumanpp").write_text("#!/bin/sh\n")
    (bin_dir / "jumanpp").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "rhoknp" else object())
    with pytest.raises(UserError, match="the rhoknp package is missing"):
        load_serving_tokenizer(directory)


def _real_texts() -> tuple[list[str], list[dict]]:
    """JRTE rhr texts and JNLI pairs (skips when ../shared/data is absent)."""
    paths = [SHARED_DATA / "jrte_rhr.tsv", SHARED_DATA / "jglue_jnli_valid.jsonl"]
    if not all(path.is_file() for path in paths):
        pytest.skip(f"shared data not available: {[str(p) for p in paths]}")
    with open(paths[0], encoding="utf-8", newline="") as handle:
        rhr = [row[2] for row in csv.reader(handle, delimiter="\t")]
    with open(paths[1], encoding="utf-8") as handle:
        pairs = [json.loads(line) for line in handle]
    return rhr, pairs


@pytest.mark.shared_data
def test_unigram_tokenizer_json_identical_to_transformers_on_real_sentences(tmp_path):
    """A Unigram tokenizer.json (as --vocabulary unigram and ModernBERT-ja ship): served ids = transformers' fast ids."""
    from transformers import AutoTokenizer

    from jbert.tokenization.unigram import train_japanese_unigram

    rhr, pairs = _real_texts()
    train_japanese_unigram(rhr[:1000], 2000, tmp_path / "unigram", model_max_length=512)
    served, reference = load_serving_tokenizer(tmp_path / "unigram"), AutoTokenizer.from_pretrained(str(tmp_path / "unigram"))
    assert isinstance(served, FastJsonTokenizer)
    firsts, seconds = [p["sentence1"] for p in pairs], [p["sentence2"] for p in pairs]
    assert not id_mismatches(reference, served, rhr + firsts + seconds)
    for max_length in (16, 128):
        expected = reference(firsts, seconds, truncation=True, max_length=max_length)
        got = served.encode_batch(firsts, seconds, max_length=max_length)
        assert [e.input_ids for e in got] == expected["input_ids"]
        assert [e.token_type_ids for e in got] == expected["token_type_ids"]


@pytest.mark.shared_data
@pytest.mark.parametrize("family", ["DebertaV2Tokenizer", "XLMRobertaTokenizer"])
def test_identical_on_real_sentences(tmp_path, family):
    rhr, pairs = _real_texts()
    _quiet()
    texts = rhr + [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs]
    # A vocabulary from part of the data, checked on all of it: unseen characters take the byte fallback.
    slow_dir = _slow_directory(tmp_path / "slow", family, rhr[:2500], vocab_size=1500)
    served = _served_model_dir(slow_dir, tmp_path / "model")
    # served (tokenizers library) against the SentencePiece model, and against transformers' fast tokenizer
    for reference in (_slow(slow_dir), load_tokenizer(str(tmp_path / "model"))):
        mismatches = id_mismatches(reference, served, texts)
        assert not mismatches, f"{type(reference).__name__}: {len(mismatches)} of {len(texts)} differ, first: {mismatches[0]}"
