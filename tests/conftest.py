"""Shared test fixtures: tiny Japanese tokenizers and tiny BERT model directories built in seconds.

Nothing is downloaded: the vocabulary is written here and the model is randomly initialised.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Tiny models gain nothing from several threads, and OpenMP threads spinning against each other
# (or against a second training process in the multi-process tests) slow them down many times.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Words MeCab (unidic-lite) produces for the fixture sentences, plus single characters so that
# WordPiece can spell out anything else.
TINY_VOCAB_WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "この", "商品", "は", "とても", "良い", "悪い", "です", "。", "、", "最高", "最悪", "普通",
    "料理", "美味しい", "まずい", "ホテル", "部屋", "が", "の", "を", "に", "で", "た", "て", "し",
    "##い", "##な", "##る", "##た", "##し", "犬", "猫", "走る", "寝る", "今日", "天気", "雨", "晴れ",
]
TINY_VOCAB_CHARS = list("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
                        "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンー"
                        "日本語文字良悪最高低品質味店員対応速遅安値段")


def write_tiny_japanese_tokenizer(directory: Path, max_length: int = 64):
    """Write and return a BertJapaneseTokenizer (MeCab unidic-lite + WordPiece) with a tiny vocab."""
    from jbert.tokenization.wordpiece import save_bert_japanese_tokenizer

    vocab = list(dict.fromkeys(TINY_VOCAB_WORDS + TINY_VOCAB_CHARS + ["##" + c for c in TINY_VOCAB_CHARS]))
    return save_bert_japanese_tokenizer(vocab, directory, {"mecab_dic": "unidic_lite"}, max_length)


def make_tiny_model_dir(
    directory: Path,
    problem_type: str = "single_label_classification",
    labels=("negative", "neutral", "positive"),
    text_pair: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT classifier directory in the layout training produces."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from jbert.core.artifacts import EXAMPLES_FILE, JbertSettings

    directory = Path(directory)
    tokenizer = write_tiny_japanese_tokenizer(directory)
    num_labels = 1 if problem_type == "regression" else len(labels)
    config = BertConfig(
        vocab_size=len(tokenizer.vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels, problem_type=problem_type,
    )
    if problem_type != "regression":
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    JbertSettings(
        max_length=64, problem_type=problem_type, text_pair_column="text_pair" if text_pair else None
    ).save(directory)
    examples = [
        {"text": "この商品はとても良いです。", "label": labels[-1] if num_labels > 1 else 4.5},
        {"text": "最悪の料理でした。", "label": labels[0] if num_labels > 1 else 0.5},
        {"text": "普通のホテルです", "label": labels[min(1, len(labels) - 1)] if num_labels > 1 else 2.5},
        {"text": "今日は雨", "label": labels[0] if num_labels > 1 else 1.0},
    ]
    if text_pair:
        for example in examples:
            example["text_pair"] = "今日の天気は晴れです。"
    with open(directory / EXAMPLES_FILE, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    return directory


_EXPORTS: dict[tuple, tuple[Path, Path]] = {}


def cached_export(tmp_path_factory, problem_type: str = "single_label_classification", text_pair: bool = False,
                  labels=("negative", "neutral", "positive")) -> tuple[Path, Path]:
    """(model_dir, export_dir) of a tiny model exported by export.py's code (fp32 + avx2 int8),
    once per test session and shared by the runtime, scoring and serving tests."""
    from jbert.export import ExportOptions, export_model

    key = (problem_type, text_pair, tuple(labels))
    if key not in _EXPORTS:
        root = tmp_path_factory.mktemp(f"export-{problem_type}-{'pair' if text_pair else 'single'}")
        model_dir = make_tiny_model_dir(root / "model", problem_type=problem_type, labels=labels, text_pair=text_pair)
        export_model(model_dir, root / "export", ExportOptions(quantize="avx2", show_progress=False))
        _EXPORTS[key] = (model_dir, root / "export")
    return _EXPORTS[key]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """Export directory of the tiny single-label model."""
    return cached_export(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def classifier(export_dir):
    """The runtime on that export's fp32 model, one thread."""
    from jbert.serve.runtime import OnnxClassifier

    return OnnxClassifier.from_export_dir(export_dir, model="fp32", num_threads=1)


@pytest.fixture
def tiny_tokenizer_dir(tmp_path):
    """A directory holding a tiny BertJapaneseTokenizer."""
    directory = tmp_path / "tokenizer"
    write_tiny_japanese_tokenizer(directory)
    return directory


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny single-label (3 classes) BERT model directory."""
    return make_tiny_model_dir(tmp_path / "model")


def pytest_configure(config):
    config.addinivalue_line("markers", "multiprocess: launches several real training processes (minutes)")
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (skipped when absent)")
