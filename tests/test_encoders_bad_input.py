"""Bad input for the encoder families: one clear message, exit code 2, nothing written.

A model type Optimum cannot export (LUKE), a --max_length beyond the model's positions at train and
at export time (RoBERTa-style models hold two fewer tokens than max_position_embeddings), and static
int8 for DeBERTa, whose graph has subgraphs Optimum's static quantizer refuses.
"""

from __future__ import annotations

import csv
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from builders.encoder_families import build_pretrained_dir  # noqa: E402

from jbert.core.artifacts import JbertSettings  # noqa: E402
from jbert.export import cli as export_cli  # noqa: E402
from jbert.train import cli as train_cli  # noqa: E402
from jbert.train.positions import position_limit  # noqa: E402

QUICKSTART = REPO_ROOT / "data" / "quickstart"


def _texts() -> list[str]:
    with open(QUICKSTART / "train.csv", encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory):
    """A tiny XLM-R classifier directory: max_position_embeddings 130, so 128 tokens."""
    return build_pretrained_dir(tmp_path_factory.mktemp("xlmr") / "base", "xlm-roberta", _texts(), vocab_size=400)


def test_position_limit_counts_the_roberta_padding_offset():
    from transformers import BertConfig, ModernBertConfig, XLMRobertaConfig

    assert position_limit(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert position_limit(BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(ModernBertConfig(max_position_embeddings=8192)) == 8192


def test_a_model_type_optimum_cannot_export_is_refused_before_anything_is_written(tmp_path, capsys):
    from transformers import LukeConfig

    model_dir = tmp_path / "luke"
    config = LukeConfig(vocab_size=100, entity_vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, entity_emb_size=16, num_labels=2)
    config.architectures = ["LukeForSequenceClassification"]
    config.save_pretrained(model_dir)
    assert export_cli.run([str(model_dir), str(tmp_path / "export")]) == 2
    message = capsys.readouterr().err
    assert "luke model (LukeForSequenceClassification), which cannot be exported to ONNX" in message
    assert "modernbert" in message and "docs/encoders.md" in message
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("task", ["auto", "mlm"])
def test_train_refuses_a_max_length_beyond_the_positions(xlmr_dir, tmp_path, capsys, task):
    output = tmp_path / "model"
    code = train_cli.run(["--model_name_or_path", str(xlmr_dir), "--train_file", str(QUICKSTART / "train.csv"),
                          "--output_dir", str(output), "--max_length", "129", "--max_train_steps", "1", "--disable_tqdm",
                          "--task", task])
    assert code == 2
    assert "--max_length 129 exceeds the 128 positions of" in capsys.readouterr().err
    assert not output.exists()


def test_export_refuses_a_max_length_beyond_the_positions(xlmr_dir, tmp_path, capsys):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(xlmr_dir, model_dir)
    JbertSettings(max_length=129).save(model_dir)  # a hand-edited jbert.json: 129 > 130 - 2
    assert export_cli.run([str(model_dir), str(tmp_path / "export")]) == 2
    assert "sets max_length 129 but the xlm-roberta model has only 128 positions" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_static_int8_for_deberta_says_why_and_what_to_use(tmp_path, capsys):
    model_dir = build_pretrained_dir(tmp_path / "deberta", "deberta-v2", _texts(), vocab_size=400)
    JbertSettings(max_length=32).save(model_dir)
    code = export_cli.run([str(model_dir), str(tmp_path / "export"), "--quantize", "avx2", "--quantize_method", "static",
                           "--calibration_file", str(QUICKSTART / "validation.csv"), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "--quantize_method static cannot be used" in message and "(If, from the deberta-v2 architecture)" in message
    assert "use --quantize_method dynamic" in message
    assert not (tmp_path / "export").exists()


def test_a_model_whose_graph_needs_inputs_the_runtime_does_not_build_is_refused(tmp_path, capsys):
    from transformers import LayoutLMConfig

    model_dir = tmp_path / "layoutlm"
    config = LayoutLMConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.architectures = ["LayoutLMForSequenceClassification"]
    config.save_pretrained(model_dir)
    assert export_cli.run([str(model_dir), str(tmp_path / "export")]) == 2
    assert "whose ONNX graph would take ['bbox'], which jbert's runtime does not build" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
