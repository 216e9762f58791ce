"""--task mlm: whole-word masking over MeCab words, packing, and a tiny BERT that pretrains, resumes
exactly, saves a directory a classifier fine-tunes from."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import SimulatedCrash, crash_after, mlm_args, run_training, tiny_args, topic_rows, write_tiny_japanese_tokenizer

from jbert.train.config import parse_config
from jbert.train.mlm_data import (
    IGNORE_INDEX,
    WholeWordMaskCollator,
    build_sequences,
    mask_whole_words,
    tokenize_with_word_starts,
    word_spans,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return write_tiny_japanese_tokenizer(tmp_path_factory.mktemp("tok"))


def test_word_spans_are_the_mecab_words(tokenizer):
    from jbert.tokenization.mecab import MecabWordSplitter

    text = "今日はテニスです。美味しいカレーを食べた"
    (ids, starts), = tokenize_with_word_starts([text], tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    # known splits: MeCab keeps テニス and カレー as one word each; the tiny vocabulary spells them
    # out in pieces (テ ##ニ ##ス), and 食べ is one [UNK]
    assert tokens[2:5] == ["テ", "##ニ", "##ス"] and tokens[8:11] == ["カ", "##レ", "##ー"]
    spans = word_spans(starts)
    words = ["".join(tokens[i].removeprefix("##") for i in span) for span in spans]
    mecab_words = MecabWordSplitter("unidic_lite").split(text)
    assert words == [w if w != "食べ" else "[UNK]" for w in mecab_words]


def test_whole_word_masking_masks_all_pieces_of_a_word_together(tokenizer):
    texts = ["今日はテニスです。美味しいカレーを食べた", "ホテルの部屋がとても良いテニスです"] * 4
    sequences, _ = build_sequences(tokenize_with_word_starts(texts, tokenizer), tokenizer, 64, pack=True)
    specials = set(tokenizer.all_special_ids)
    partially_masked_words = 0
    multi_piece_words_masked = 0
    for seed in range(200):
        generator = torch.Generator().manual_seed(seed)
        for sequence in sequences:
            masked, labels = mask_whole_words(sequence["input_ids"], sequence["word_starts"],
                                              tokenizer.mask_token_id, len(tokenizer), specials, 0.3, generator)
            for span in word_spans(sequence["word_starts"]):
                chosen = [labels[i] != IGNORE_INDEX for i in span]
                partially_masked_words += any(chosen) and not all(chosen)
                multi_piece_words_masked += len(span) > 1 and all(chosen)
            for position, (token, label) in enumerate(zip(sequence["input_ids"], labels)):
                assert label in (IGNORE_INDEX, token)
                if sequence["word_starts"][position] == -1:
                    assert label == IGNORE_INDEX and masked[position] == token  # [CLS]/[SEP] never masked
    assert partially_masked_words == 0
    assert multi_piece_words_masked > 100  # テニス / カレー were chosen, always with all their pieces


def test_masking_rate_and_80_10_10_rule(tokenizer):
    text = "ホテルの部屋がとても良い。" * 30
    (ids, starts), = tokenize_with_word_starts([text], tokenizer)
    specials = set(tokenizer.all_special_ids)
    outcome = Counter()
    chosen_fraction = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        masked, labels = mask_whole_words(ids, starts, tokenizer.mask_token_id, len(tokenizer), specials, 0.15,
                                          generator)
        selected = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        chosen_fraction.append(len(selected) / len(ids))
        for i in selected:
            outcome["mask" if masked[i] == tokenizer.mask_token_id else "kept" if masked[i] == ids[i] else "random"] += 1
    assert np.mean(chosen_fraction) == pytest.approx(0.15, abs=0.01)
    total = sum(outcome.values())
    assert outcome["mask"] / total == pytest.approx(0.8, abs=0.03)
    # a random token can hit the original by chance, so "kept" is a little over 10%
    assert outcome["random"] / total == pytest.approx(0.1, abs=0.03)
    assert outcome["kept"] / total == pytest.approx(0.1, abs=0.03)


def test_packing_fills_sequences_and_truncation_counts(tokenizer):
    texts = ["ホテルの部屋がとても良い"] * 10  # 6 tokens each
    encoded = tokenize_with_word_starts(texts, tokenizer)
    packed, truncated = build_sequences(encoded, tokenizer, 16, pack=True)
    assert truncated == 0 and all(len(s["input_ids"]) <= 16 for s in packed)
    assert sum(len(s["input_ids"]) for s in packed[:-1]) >= 14 * (len(packed) - 1)  # full apart from the last
    # every token survives packing: 60 text tokens + 9 separators between texts (minus any at a cut)
    assert sum(len(s["input_ids"]) - 2 for s in packed) >= 60
    single, truncated = build_sequences(encoded, tokenizer, 5, pack=False)
    assert len(single) == 10 and truncated == 10 and all(len(s["input_ids"]) == 5 for s in single)


def test_collator_masks_per_epoch_deterministically(tokenizer):
    sequences, _ = build_sequences(tokenize_with_word_starts(["ホテルの部屋がとても良い"] * 8, tokenizer), tokenizer,
                                   16, pack=False)
    collator = WholeWordMaskCollator(tokenizer, 0.3, seed=3)
    first = collator(sequences)["labels"]
    assert torch.equal(first, collator(sequences)["labels"])  # same epoch, same masks (exact resume)
    collator.set_epoch(1)
    assert not torch.equal(first, collator(sequences)["labels"])  # a new epoch predicts other words
    assert (first != IGNORE_INDEX).any(dim=1).all()


def run_mlm(argv: list[str], on_step_end=None) -> dict:
    from jbert.train.loop import train

    return train(parse_config(argv), on_step_end=on_step_end)


def test_mlm_trains_saves_and_fine_tunes(topic_files):
    tmp = topic_files
    metrics = run_mlm(mlm_args(tmp))
    history = [h for h in metrics["history"] if "eval_perplexity" in h]
    assert history[0]["step"] == 0
    # an untrained model guesses among ~400 tokens; after 10 short epochs it must predict far better
    assert metrics["validation"]["perplexity"] < 0.3 * history[0]["eval_perplexity"], history
    mlm_dir = tmp / "mlm"
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "jbert.json",
                 "training_config.yaml", "metrics.json", "README.md", "perplexity.png"):
        assert (mlm_dir / name).is_file(), name
    card = (mlm_dir / "README.md").read_text(encoding="utf-8")
    assert "perplexity" in card and "--model_name_or_path" in card
    assert not (tmp / "mlm.checkpoints").exists()

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    assert type(model).__name__ == "BertForMaskedLM"
    assert type(AutoTokenizer.from_pretrained(mlm_dir)).__name__ == "BertJapaneseTokenizer"

    # the MLM directory is a starting point for classification, with a fresh head
    result = run_training(tiny_args(tmp, from_scratch=None, vocab_size=None, model_name_or_path=str(mlm_dir),
                                    output_dir=str(tmp / "clf"), num_train_epochs=6, baseline="none"))
    assert result["validation"]["accuracy"] >= 0.9, result["validation"]
    encoder = load_file(str(mlm_dir / "model.safetensors"))
    classifier = load_file(str(tmp / "clf" / "model.safetensors"))
    assert "classifier.weight" in classifier and not any(k.startswith("cls.") for k in classifier)
    assert (tmp / "clf" / "vocab.txt").read_text(encoding="utf-8") == (mlm_dir / "vocab.txt").read_text(encoding="utf-8")
    assert encoder["bert.embeddings.word_embeddings.weight"].shape == classifier["bert.embeddings.word_embeddings.weight"].shape


def test_mlm_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    common = dict(num_train_epochs=4, checkpointing_steps=3, dropout=0.1)
    full = run_mlm(mlm_args(tmp_path, output_dir=str(tmp_path / "full"), **common))
    crash = crash_after(6)  # mid-epoch 2 (4 steps per epoch), right after the step-6 checkpoint
    with pytest.raises(SimulatedCrash):
        run_mlm(mlm_args(tmp_path, output_dir=str(tmp_path / "resumed"), **common), on_step_end=crash)
    assert not (tmp_path / "resumed").exists()
    resumed = run_mlm(mlm_args(tmp_path, output_dir=str(tmp_path / "resumed"), resume_from_checkpoint="auto",
                               **common))
    assert resumed["global_step"] == full["global_step"] > 6
    assert resumed["validation"]["loss"] == pytest.approx(full["validation"]["loss"], rel=1e-5)
    full_weights, resumed_weights = load_file(str(tmp_path / "full" / "model.safetensors")), \
        load_file(str(tmp_path / "resumed" / "model.safetensors"))
    worst = max(float(np.abs(full_weights[k] - resumed_weights[k]).max()) for k in full_weights)
    print(f"largest weight difference resumed vs uninterrupted: {worst:.2e}")
    assert worst < 1e-5


def test_mlm_reads_a_table_column_and_reports_a_wrong_one(tmp_path):
    from jbert.core.errors import UserError
    from jbert.data.unlabeled import read_unlabeled_texts

    table = tmp_path / "reviews.jsonl"
    table.write_text("\n".join(json.dumps({"body": r["text"], "label": r["label"]}, ensure_ascii=False)
                               for r in topic_rows(3, 0)), encoding="utf-8")
    assert len(read_unlabeled_texts(table, "body")) == 9
    with pytest.raises(UserError, match="no column 'text'.*--text_column"):
        read_unlabeled_texts(table, "text")


def test_mlm_pools_several_files_and_columns_without_duplicates(tmp_path):
    from jbert.core.errors import UserError
    from jbert.data.unlabeled import read_unlabeled_corpus

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"sentence1": a, "sentence2": b, "label": 0}, ensure_ascii=False)
                                for a, b in [("猫が寝る。", "犬が走る。"), ("猫が寝る。", "鳥が飛ぶ。")]), encoding="utf-8")
    plain = tmp_path / "more.txt"
    plain.write_text("犬が走る。\n魚が泳ぐ。\n", encoding="utf-8")
    texts = read_unlabeled_corpus(f"{pairs},{plain}", "sentence1,sentence2")
    # both columns count, row by row; the repeated sentences are kept once, first occurrence first
    assert texts == ["猫が寝る。", "犬が走る。", "鳥が飛ぶ。", "魚が泳ぐ。"]
    with pytest.raises(UserError, match="does not exist"):
        read_unlabeled_corpus(f"{plain},{tmp_path / 'missing.txt'}")


def test_train_py_runs_mlm_and_rejects_contradictions(tmp_path, capsys):
    import train as train_script

    argv = mlm_args(tmp_path, max_train_steps=2, output_dir=str(tmp_path / "cli"))
    assert train_script.run(argv) == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text(encoding="utf-8"))["task"] == "mlm"
    code = train_script.run(argv + ["--hp_search", "2", "--mlm_probability", "1.5", "--overwrite_output_dir"])
    err = capsys.readouterr().err
    assert code == 2 and "--hp_search tunes classification" in err and "--mlm_probability must be in (0, 1)" in err
