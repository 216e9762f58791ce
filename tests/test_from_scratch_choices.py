"""--from_scratch with a choice: --architecture bert|modernbert|deberta-v2 and --vocabulary mecab-wordpiece|unigram.

Each combination trains a tiny model on the topic fixture, which must learn it, and writes a model
directory whose tokenizer serving loads torch-free with the ids transformers gives. Bad
combinations fail up front with one message (exit 2).
"""

from __future__ import annotations

import json
import warnings

import pytest

from conftest import TEXTS, run_training, tiny_args
from jbert.core.errors import UserError
from jbert.tokenization import FastBertJapaneseTokenizer, FastJsonTokenizer, load_serving_tokenizer


@pytest.mark.parametrize(
    "architecture,vocabulary,model_type,epochs",
    [
        ("modernbert", "unigram", "modernbert", 6),
        ("deberta-v2", "mecab-wordpiece", "deberta-v2", 6),
        ("bert", "unigram", "bert", 8),
    ],
)
def test_each_choice_learns_and_serves_transformers_ids(topic_files, architecture, vocabulary, model_type, epochs):
    from transformers import AutoTokenizer

    argv = tiny_args(topic_files, architecture=architecture, vocabulary=vocabulary, num_train_epochs=epochs,
                     baseline="none", calibrate="none")
    metrics = run_training(argv)
    model_dir = topic_files / "model"
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == model_type
    assert metrics["validation"]["accuracy"] >= 0.75, metrics["validation"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast path, no fallback
        served = load_serving_tokenizer(model_dir)
    assert isinstance(served, FastJsonTokenizer if vocabulary == "unigram" else FastBertJapaneseTokenizer)
    reference = AutoTokenizer.from_pretrained(str(model_dir))
    pairs = list(reversed(TEXTS))
    assert [e.input_ids for e in served.encode_batch(TEXTS, pairs, max_length=12)] == \
        reference(TEXTS, pairs, truncation=True, max_length=12)["input_ids"]
    if architecture != "bert":  # ModernBERT and DeBERTa-v3 take no token types
        assert "token_type_ids" not in reference.model_input_names or vocabulary != "unigram"


def test_unigram_vocabulary_is_learned_from_the_texts(tmp_path):
    from jbert.tokenization.unigram import train_japanese_unigram

    texts = ["このホテルの部屋はとても良いです。", "部屋が広くて良いホテルでした。"] * 30
    tokenizer = train_japanese_unigram(texts, 60, tmp_path / "unigram", model_max_length=64,
                                       model_input_names=("input_ids", "attention_mask"))
    pieces = tokenizer.tokenize("このホテルの部屋")
    assert len(pieces) < len("このホテルの部屋")  # multi-character pieces, not one per character
    assert tokenizer("部屋")["input_ids"][0] == tokenizer.cls_token_id and "token_type_ids" not in tokenizer("部屋")
    assert tokenizer.unk_token_id not in tokenizer("部屋と良いホテル")["input_ids"]
    with pytest.raises(UserError, match="all empty"):
        train_japanese_unigram(["", " "], 60, tmp_path / "empty")


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"from_scratch": None, "model_name_or_path": "some/model", "architecture": "modernbert"},
         "apply to --from_scratch only"),
        ({"task": "mlm", "vocabulary": "unigram"}, "--task mlm builds BERT"),
        ({"architecture": "modernbert", "max_length": 9000}, "beyond ModernBERT's 8192 positions"),
        ({"architecture": "gpt"}, "invalid choice"),
    ],
)
def test_bad_choices_are_refused_up_front(topic_files, overrides, message, capsys):
    from jbert.train.config import parse_config

    with pytest.raises((UserError, SystemExit)) as raised:
        parse_config(tiny_args(topic_files, **overrides))
    text = str(raised.value) if raised.type is UserError else capsys.readouterr().err
    assert message in text
    if raised.type is SystemExit:
        assert raised.value.code == 2


def test_max_length_beyond_a_pretrained_models_positions(tmp_path):
    """A pretrained model's positions bound --max_length (RoBERTa-style offset included); within them the tokenizer follows."""
    from types import SimpleNamespace

    from transformers import XLMRobertaConfig

    from jbert.train.positions import check_pretrained_length

    XLMRobertaConfig(max_position_embeddings=66, pad_token_id=1, vocab_size=10, hidden_size=8,
                     num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    tokenizer = SimpleNamespace(model_max_length=32)
    config = SimpleNamespace(model_name_or_path=str(tmp_path), trust_remote_code=False)
    with pytest.raises(UserError, match="exceeds the 64 positions"):
        check_pretrained_length(config, tokenizer, 65)
    check_pretrained_length(config, tokenizer, 64)
    assert tokenizer.model_max_length == 64


def test_modernbert_takes_8192_tokens_and_bert_keeps_growing_its_positions(topic_files):
    from jbert.train.config import parse_config
    from jbert.train.modeling import scratch_model_config

    config = parse_config(tiny_args(topic_files, architecture="modernbert", max_length=8192))
    assert config.max_length == 8192
    special = {"pad_token_id": 0, "cls_token_id": 2, "sep_token_id": 3}
    assert scratch_model_config("modernbert", "tiny", 100, special, 8192).max_position_embeddings == 8192
    assert scratch_model_config("bert", "tiny", 100, special, 1024).max_position_embeddings == 1024  # as before
    with pytest.raises(UserError, match="beyond ModernBERT's 8192 positions"):
        scratch_model_config("modernbert", "tiny", 100, special, 8193)


def test_train_py_refuses_a_max_length_beyond_the_models_positions(tmp_path, topic_files, capsys):
    """Through the script users run: exit 2, the message names the positions, nothing written."""
    import train as train_script

    from conftest import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path / "pretrained")  # a BERT with 64 positions
    argv = tiny_args(topic_files, from_scratch=None, model_name_or_path=str(model_dir), max_length=65,
                     output_dir=str(tmp_path / "out"))
    assert train_script.run(argv) == 2
    assert "exceeds the 64 positions" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("architecture", ["bert", "modernbert", "deberta-v2"])
def test_dropout_sets_every_rate_the_family_has_and_adds_no_other(tmp_path, architecture):
    """--dropout reaches each rate a family's config has (built from scratch or loaded pretrained), and
    the saved config.json gains no rate names of another family."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.train.modeling import DROPOUT_FIELDS, load_pretrained_model, scratch_model_config

    ids = {"pad_token_id": 0, "cls_token_id": 2, "sep_token_id": 3}
    plain = scratch_model_config(architecture, "tiny", 100, ids, 64)
    own_rates = {name for name in DROPOUT_FIELDS if hasattr(plain, name)}
    scratch = scratch_model_config(architecture, "tiny", 100, ids, 64, dropout=0.25)
    assert own_rates and all(getattr(scratch, name) == 0.25 for name in own_rates)

    AutoModelForSequenceClassification.from_config(plain).save_pretrained(tmp_path / "pretrained")
    written = json.loads((tmp_path / "pretrained" / "config.json").read_text(encoding="utf-8"))
    model = load_pretrained_model(str(tmp_path / "pretrained"), ["a", "b"], "single_label_classification", dropout=0.25)
    model.save_pretrained(tmp_path / "tuned")
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text(encoding="utf-8"))
    assert {name for name in DROPOUT_FIELDS if name in saved} == {name for name in DROPOUT_FIELDS if name in written}
    assert all(saved[name] == 0.25 for name in DROPOUT_FIELDS if name in saved)
    rates = [module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    assert rates and set(rates) == {0.25}
