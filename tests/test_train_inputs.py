"""Hostile training input: wrong-typed YAML values, FIFOs and devices, binary columns, label texts that
mean "missing", label names that break Markdown, and a training set of duplicates (issue 21).

Each case ends in a message naming what to fix and exit code 2, never a traceback or a hang: the
FIFO and /dev/zero cases run `train.py` as a real process under a timeout, so a read that waits
forever fails the test instead of hanging it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROWS, data_config, topic_rows, write_csv, write_training_csv

from jbert.core.errors import UserError
from jbert.train.cli import run
from jbert.train.config import TrainConfig, load_yaml_recipe, parse_config
from jbert.train.recipe_values import typed_recipe_values

REPO = Path(__file__).resolve().parent.parent
# Generous bound on one train.py process that must stop at option checking (imports included, on
# two busy cores); reaching it means a read blocked, which is the failure under test.
PROCESS_DEADLINE_S = 120


def _recipe(tmp_path: Path, text: str) -> Path:
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    path = tmp_path / "recipe.yaml"
    path.write_text(f"from_scratch: tiny\ntrain_file: {tmp_path / 'train.csv'}\noutput_dir: {tmp_path / 'out'}\n"
                    + text, encoding="utf-8")
    return path


def _train_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=PROCESS_DEADLINE_S, env={**os.environ, "PYTHONPATH": str(REPO)})


# ------------------------------------------------------------------------------ YAML value types

BAD_VALUES = {  # key: (YAML text of the value, words the message must hold)
    "seed": ("[1, 2]", "seed: [1, 2] is a list, expected an integer"),
    "train_file": ("[a, b]", "train_file: ['a', 'b'] is a list, expected a string"),
    "text_column": ("[a]", "text_column: ['a'] is a list, expected a string"),
    "learning_rate": ('"fast"', "learning_rate: 'fast' is a string, expected a number"),
    "max_length": ("1.5", "max_length: 1.5 is a decimal number, expected an integer"),
    "nfkc": ('"maybe"', "nfkc: 'maybe' is a string, expected true or false"),
    "task": ("foo", "task: 'foo' is not one of"),
    "label_column": ("", "label_column: an empty value (null), expected a string"),
    "per_device_train_batch_size": ("true", "per_device_train_batch_size: True is a boolean, expected an integer"),
    "label_delimiter": ("{a: 1}", "label_delimiter: {'a': 1} is a mapping, expected a string or null"),
}


def test_every_wrong_typed_yaml_value_is_named_in_one_message_by_a_real_process(tmp_path):
    text = "".join(f"{key}: {value}\n" for key, (value, _) in BAD_VALUES.items() if key != "train_file")
    recipe = _recipe(tmp_path, text + "learning_rte: 0.1\n")
    result = _train_process(["--config", str(recipe)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for key, (_, words) in BAD_VALUES.items():
        if key != "train_file":
            assert words in result.stderr, key
    assert "unknown options ['learning_rte']" in result.stderr
    assert f"{len(BAD_VALUES)} problem(s)" in result.stderr  # nine values + the unknown key


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_each_wrong_typed_yaml_value_alone_is_exit_2(tmp_path, capsys, key):
    value, words = BAD_VALUES[key]
    recipe = _recipe(tmp_path, f"{key}: {value}\n")
    assert run(["--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert words in err and f"--config {recipe}" in err


def test_yaml_values_argparse_would_accept_are_converted(tmp_path):
    # YAML 1.1 reads 5e-5 (no dot) as a string; quoted numbers and yes/no words are what a flag takes
    recipe = _recipe(tmp_path, "learning_rate: 5e-5\nmax_length: '64'\nnfkc: 'false'\nremove_control: no\n"
                               "num_train_epochs: 2\ncheckpointing_steps: 500\ngroup_by_length: 0\ndropout: null\n")
    config = parse_config(["--config", str(recipe)])
    assert config.learning_rate == 5e-5 and isinstance(config.learning_rate, float)
    assert config.max_length == 64 and config.nfkc is False and config.remove_control is False
    assert config.num_train_epochs == 2.0 and isinstance(config.num_train_epochs, float)
    assert config.checkpointing_steps == "500" and config.group_by_length is False and config.dropout is None


def test_every_option_type_is_checked_and_the_defaults_pass():
    values = dataclasses.asdict(TrainConfig())
    converted, problems = typed_recipe_values(TrainConfig, values)
    assert problems == [] and converted == values


def test_saved_training_config_with_value_sources_loads_as_a_recipe(tmp_path):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    config = parse_config(["--train_file", str(tmp_path / "train.csv"), "--from_scratch", "tiny",
                           "--checkpointing_steps", "epoch", "--tf32", "false"])
    saved = tmp_path / "training_config.yaml"
    saved.write_text(yaml.safe_dump(config.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    reloaded = parse_config(["--config", str(saved)])
    assert dataclasses.asdict(reloaded) == {**dataclasses.asdict(config), "config": str(saved)}


def test_non_finite_numbers_are_refused_from_flags_and_yaml(tmp_path):
    recipe = _recipe(tmp_path, "learning_rate: .nan\n")
    with pytest.raises(UserError, match=r"--learning_rate must be a finite number \(got nan\)"):
        parse_config(["--config", str(recipe)])
    with pytest.raises(UserError, match=r"--warmup_ratio must be a finite number \(got inf\)"):
        parse_config(["--config", str(recipe), "--learning_rate", "1e-3", "--warmup_ratio", "inf"])


def test_recipe_size_nesting_and_key_types_are_bounded(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: 1\n" + "#" * (1024 * 1024) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="larger than 1,048,576 bytes"):
        load_yaml_recipe(str(huge))
    deep = tmp_path / "deep.yaml"
    deep.write_text("seed: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="nests lists or mappings too deeply"):
        load_yaml_recipe(str(deep))
    odd_keys = tmp_path / "keys.yaml"
    odd_keys.write_text("3: x\ntrue: y\nnull: z\nseed: 1\n", encoding="utf-8")  # keys that are not strings
    with pytest.raises(UserError, match=r"unknown options \['3', 'None', 'True'\]"):
        load_yaml_recipe(str(odd_keys))


# ------------------------------------------------------------------------------ FIFOs and devices


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo.csv"
    os.mkfifo(path)  # nothing ever writes to it: a reader would block forever
    return path


@pytest.mark.parametrize("flag", ["--config", "--train_file", "--validation_file", "--test_file"])
def test_a_fifo_is_refused_before_reading(tmp_path, fifo, flag):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    args = ["--from_scratch", "tiny", "--output_dir", str(tmp_path / "out")]
    if flag != "--train_file":
        args += ["--train_file", str(tmp_path / "train.csv")]
    result = _train_process(args + [flag, str(fifo)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{flag} {fifo} is a FIFO (named pipe), not a regular file" in result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused_as_config_and_data_and_mlm_text(tmp_path):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    result = _train_process(["--config", "/dev/zero"], tmp_path)
    assert result.returncode == 2 and "--config /dev/zero is a character device" in result.stderr
    result = _train_process(["--from_scratch", "tiny", "--train_file", "/dev/zero"], tmp_path)
    assert result.returncode == 2 and "--train_file /dev/zero is a character device" in result.stderr
    result = _train_process(["--task", "mlm", "--from_scratch", "tiny", "--train_file",
                             f"{tmp_path / 'train.csv'},/dev/zero"], tmp_path)
    assert result.returncode == 2 and "--train_file /dev/zero is a character device" in result.stderr


def test_readers_refuse_a_fifo_given_past_option_checking(tmp_path, fifo):
    # the data stage and the shared readers check again (prepare_data and export read files too)
    code = ("import sys; from jbert.core.errors import UserError\n"
            "from jbert.data.files import open_source\nfrom jbert.core.readers import iter_rows\n"
            "for attempt in (lambda: open_source(sys.argv[1], 'test'), lambda: next(iter_rows(sys.argv[1]))):\n"
            "    try:\n        attempt()\n    except UserError as err:\n        print(err)\n")
    result = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True,
                            timeout=PROCESS_DEADLINE_S, cwd=REPO)
    assert result.stdout.splitlines() == [f"--test_file {fifo} is a FIFO (named pipe), not a regular file; write the "
                                          "data to a file and give its path",
                                          f"{fifo} is a FIFO (named pipe), not a regular file; write the data to a "
                                          "file and give its path"], result.stderr


def test_a_saved_dataset_directory_is_still_a_valid_train_file(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS * 2).save_to_disk(str(tmp_path / "saved"))
    config = parse_config(["--from_scratch", "tiny", "--train_file", str(tmp_path / "saved")])
    assert config.train_file == str(tmp_path / "saved")


# ------------------------------------------------------------------------------ binary Parquet columns


def _binary_parquet(path: Path, column: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = {"text": [row["text"] for row in ROWS], "label": [row["label"] for row in ROWS]}
    table[column] = pa.array([value.encode("utf-8") for value in table[column]], type=pa.binary())
    pq.write_table(pa.table(table), path)
    return path


@pytest.mark.parametrize("column", ["text", "label"])
def test_binary_parquet_column_is_a_message_naming_file_and_column(tmp_path, capsys, column):
    path = _binary_parquet(tmp_path / "train.parquet", column)
    assert run(["--from_scratch", "tiny", "--train_file", str(path), "--output_dir", str(tmp_path / "out"),
                "--validation_split", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"{path}, row 0 (0-based): column {column!r} holds binary data (bytes), not text" in err


def test_binary_parquet_text_column_in_mlm_data_is_a_message(tmp_path):
    from jbert.data.unlabeled import read_unlabeled_texts

    path = _binary_parquet(tmp_path / "corpus.parquet", "text")
    with pytest.raises(UserError, match=r"corpus.parquet, row 0 \(0-based\): column 'text' holds binary data"):
        read_unlabeled_texts(path)


# ------------------------------------------------------------------------------ labels that mean "missing"

MISSING_WORD_ROWS = ROWS * 2 + [
    {"text": "猫が寝る", "label": "NaN"}, {"text": "犬が走る", "label": "None"},
    {"text": "今日は晴れ", "label": "null"}, {"text": "今日は雨です", "label": ""},
    {"text": "雨が降る", "label": " NaN "}, {"text": "天気", "label": "<NA>"},
]


def test_missing_label_texts_are_skipped_counted_and_warned(tmp_path, caplog):
    from jbert.data.prepare import prepare_data

    write_csv(tmp_path / "train.csv", MISSING_WORD_ROWS)
    with caplog.at_level(logging.WARNING):
        data = prepare_data(data_config(tmp_path, train_file=str(tmp_path / "train.csv")))
    assert data.label_names == ["negative", "neutral", "positive"]
    stats = data.stats["train"]
    assert stats["skipped_missing_label"] == 6  # five words and one empty cell
    assert stats["missing_label_words"] == {"NaN": 2, "None": 1, "null": 1, "<NA>": 1}
    assert "5 label(s) were the text '<NA>' (1) / 'NaN' (2) / 'None' (1) / 'null' (1)" in caplog.text


def test_missing_label_text_with_strict_is_an_error_and_lower_case_none_stays_a_class(tmp_path):
    from jbert.data.prepare import prepare_data

    write_csv(tmp_path / "train.csv", MISSING_WORD_ROWS)
    with pytest.raises(UserError, match=r"line 14: missing label in column 'label' \(the text 'NaN' means no value\)"):
        prepare_data(data_config(tmp_path, train_file=str(tmp_path / "train.csv"), strict=True))
    write_csv(tmp_path / "classes.csv", ROWS * 2 + [{"text": "猫", "label": "none"}, {"text": "犬", "label": "none"}])
    data = prepare_data(data_config(tmp_path, train_file=str(tmp_path / "classes.csv")))
    assert "none" in data.label_names


def test_missing_label_texts_in_a_test_file(tmp_path):
    from jbert.data.prepare import prepare_data

    write_csv(tmp_path / "train.csv", ROWS * 2)
    write_csv(tmp_path / "test.csv", [{"text": "よい", "label": "positive"}, {"text": "猫", "label": "None"}])
    write_csv(tmp_path / "unlabelled.csv", [{"text": "よい", "label": "nan"}, {"text": "猫", "label": ""}])
    data = prepare_data(data_config(tmp_path, train_file=str(tmp_path / "train.csv"), test_file=str(tmp_path / "test.csv")))
    assert len(data.test) == 1 and data.stats["test"]["missing_label_words"] == {"None": 1}
    data = prepare_data(data_config(tmp_path, train_file=str(tmp_path / "train.csv"),
                                    test_file=str(tmp_path / "unlabelled.csv")))
    assert len(data.test) == 2 and data.stats["test"]["has_labels"] is False


# ------------------------------------------------------------------------------ duplicates


def test_mostly_duplicate_training_texts_are_counted_and_warned(tmp_path, caplog):
    from jbert.data.prepare import prepare_data

    write_csv(tmp_path / "train.csv", ROWS * 3)
    write_csv(tmp_path / "valid.csv", ROWS)
    config = data_config(tmp_path, train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "valid.csv"))
    with caplog.at_level(logging.WARNING):
        data = prepare_data(config)
    assert data.stats["train"]["duplicate_texts"] == 12 and data.stats["validation"]["duplicate_texts"] == 0
    assert "12 of its 18 examples repeat an earlier text (only 6 distinct)" in caplog.text

    caplog.clear()
    write_csv(tmp_path / "half.csv", ROWS * 2)  # exactly half are copies: no warning
    with caplog.at_level(logging.WARNING):
        data = prepare_data(data_config(tmp_path, train_file=str(tmp_path / "half.csv"),
                                        validation_file=str(tmp_path / "valid.csv")))
    assert data.stats["train"]["duplicate_texts"] == 6 and "repeat an earlier text" not in caplog.text


# ------------------------------------------------------------------------------ the model card


def test_label_names_that_break_markdown_keep_the_card_table_whole(tmp_path):
    from jbert.core.artifacts import JbertSettings
    from jbert.train.report import write_model_card

    labels = ["line\nbreak", "pipe|name", "carriage\r\nreturn", "para\u2028sep", "```", "<b>bold</b>", "back\\slash"]
    summary = {"stats": {"train": {"label_counts": {name: 1 for name in labels}}}}
    write_model_card(tmp_path, name="m", model_source="scratch", settings=JbertSettings(), label_names=labels,
                     data_summary=summary, validation_metrics={"accuracy": 1.0}, test_metrics=None,
                     best={"step": 1, "metric": "accuracy", "value": 1.0}, plots=[], config={"labels": labels})
    lines = (tmp_path / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| id | label |")
    table = lines[start:lines.index("", start)]
    assert len(table) == 2 + len(labels)
    for row in table:  # three pipes that are not escaped: two cells
        assert row.replace("\\|", "").count("|") == 3, row
    assert table[2:5] == ["| 0 | line\\nbreak |", "| 1 | pipe\\|name |", "| 2 | carriage\\r\\nreturn |"]
    assert "<b>" not in "\n".join(table)
    # the fenced JSON and YAML blocks end where they should: the headings after them are outside
    fences = [line for line in lines if line.startswith("```")]
    assert fences.count("````json") == 1 and fences.count("````yaml") == 1 and fences.count("````") == 2
    assert "## Validation metrics" in "\n".join(lines) and lines.index("## How to use") > lines.index("````")
