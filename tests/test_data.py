"""Data stage: task detection, label mapping, splits, bad input, tokenization.

Reading the files themselves (formats, encodings, the tabular reader) is tested in test_data_files.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import pytest

from conftest import ROWS, SHARED_DATA, data_config, decoded, write_csv, write_jsonl, write_tiny_japanese_tokenizer
from jbert.train.config import TrainConfig
from jbert.data.prepare import label_sort_key, prepare_data, tokenize_dataset
from jbert.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "data" / "quickstart"

# --------------------------------------------------------------------------- labels and tasks


def test_label_mapping_is_sorted_numeric_aware_and_round_trips(tmp_path):
    labels = ["10", "2", "1", "10", "2", "1", "-3", "-3"]
    rows = [{"text": f"文章{i}", "label": label} for i, label in enumerate(labels)]
    path = write_csv(tmp_path / "train.csv", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    assert data.label_names == ["-3", "1", "2", "10"]
    assert data.label2id == {"-3": 0, "1": 1, "2": 2, "10": 3}
    assert data.id2label == {0: "-3", 1: "1", 2: "2", 3: "10"}
    assert [label for _, label in decoded(data)] == labels
    assert data.train.features["labels"].names == data.label_names
    # reversed input order: same ids
    path2 = write_csv(tmp_path / "reversed.csv", rows[::-1])
    again = prepare_data(data_config(tmp_path, train_file=str(path2), validation_file=str(path2)))
    assert again.label_names == data.label_names
    assert sorted(["b", "10", "a", "9", "1.5"], key=label_sort_key) == ["1.5", "9", "10", "a", "b"]


def test_numbers_from_jsonl_and_strings_map_to_the_same_names(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "よい", "label": 1}, {"text": "わるい", "label": 0}, {"text": "ふつう", "label": 1.0}])
    validation = write_csv(tmp_path / "validation.csv", [{"text": "よい", "label": "1"}, {"text": "わるい", "label": " 0 "}])
    data = prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(validation)))
    assert data.problem_type == "single_label_classification"
    assert data.label_names == ["0", "1"]
    assert list(data.validation["labels"]) == [1, 0]


def test_saved_dataset_class_label_order_and_dataset_dict_splits(tmp_path):
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["z_first", "a_second"])})
    train = datasets.Dataset.from_dict({"sentence": ["よい", "わるい", "よい2", "わるい2"], "label": [0, 1, 0, 1]}, features=features)
    dev = datasets.Dataset.from_dict({"sentence": ["よいかも"], "label": [0]}, features=features)
    test = datasets.Dataset.from_dict({"sentence": ["?"], "label": [-1]}, features=features)  # -1: no label
    path = tmp_path / "dsdict"
    datasets.DatasetDict({"train": train, "dev": dev, "test": test}).save_to_disk(str(path))
    data = prepare_data(data_config(tmp_path, train_file=str(path), test_file=str(path), text_column="sentence"))
    assert data.label_names == ["z_first", "a_second"]  # the dataset's own id order is kept
    assert decoded(data, "validation") == [("よいかも", "z_first")]  # its dev split is used, not a split of train
    assert len(data.train) == 4
    assert data.stats["validation"]["source"].endswith("(split 'dev')")
    assert data.test.column_names == ["text"] and not data.stats["test"]["has_labels"]


def test_dataset_dict_without_the_needed_split(tmp_path):
    path = tmp_path / "dsdict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(path))
    with pytest.raises(UserError, match=r"splits \['train'\] but none named test"):
        prepare_data(data_config(tmp_path, train_file=str(path), test_file=str(path)))


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="save_to_disk"):
        prepare_data(data_config(tmp_path, train_file=str(tmp_path / "plain")))


def test_multi_label_from_a_list_column(tmp_path):
    rows = [
        {"text": "料理が美味しい", "label": ["food"]},
        {"text": "店員の対応が悪いが料理は良い", "label": ["service", "food"]},
        {"text": "今日は雨", "label": []},
        {"text": "部屋が広い", "label": ["room", "room"]},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    assert data.problem_type == "multi_label_classification"
    assert data.label_names == ["food", "room", "service"]
    assert list(data.train["labels"]) == [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert data.stats["train"]["label_counts"] == {"food": 2, "room": 1, "service": 1}
    assert data.stats["train"]["rows_without_labels"] == 1


def test_multi_label_from_a_delimiter_column_and_parquet_lists(tmp_path):
    rows = [{"text": "料理が美味しい", "label": "food"}, {"text": "対応も料理も良い", "label": "service| food"}, {"text": "部屋", "label": "room|"}]
    path = write_csv(tmp_path / "train.csv", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), label_delimiter="|"))
    assert data.problem_type == "multi_label_classification"
    assert data.label_names == ["food", "room", "service"]
    assert list(data.train["labels"]) == [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": r["text"], "label": [p.strip() for p in r["label"].split("|") if p]} for r in rows]), parquet)
    again = prepare_data(data_config(tmp_path, train_file=str(parquet), validation_file=str(path), label_delimiter="|"))
    assert list(again.train["labels"]) == list(data.train["labels"])

    # pandas writes list columns to CSV as Python reprs; auto detection reads them as lists
    as_repr = write_csv(tmp_path / "repr.csv", [{"text": r["text"], "label": repr([p.strip() for p in r["label"].split("|") if p])} for r in rows])
    third = prepare_data(data_config(tmp_path, train_file=str(as_repr), validation_file=str(as_repr)))
    assert third.problem_type == "multi_label_classification"
    assert list(third.train["labels"]) == list(data.train["labels"])


def test_regression_from_float_labels(tmp_path):
    rows = [{"text": f"文{i}", "label": value} for i, value in enumerate(["0.5", "3", "４.５", "2.25"])]
    path = write_csv(tmp_path / "train.csv", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    assert data.problem_type == "regression"
    assert data.label_names == []
    assert list(data.train["labels"]) == [0.5, 3.0, 4.5, 2.25]
    assert data.stats["train"]["label_max"] == 4.5


def test_integer_labels_are_classes_unless_regression_is_asked(tmp_path):
    rows = [{"text": f"文{i}", "label": str(i % 3 + 1)} for i in range(6)]
    path = write_csv(tmp_path / "train.csv", rows)
    assert prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path))).problem_type == "single_label_classification"
    forced = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), task="regression"))
    assert forced.problem_type == "regression" and list(forced.train["labels"]) == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]


def test_non_numeric_regression_label_names_the_row(tmp_path):
    rows = [{"text": "a", "label": "0.5"}, {"text": "b", "label": "高い"}]
    path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(UserError, match=r"line 3: label '高い' is not a number"):
        prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), task="regression"))


def test_sentence_pairs(tmp_path):
    rows = [{"premise": "犬が走る", "hypothesis": "動物が動く", "label": "entailment"},
            {"premise": "猫が寝る", "hypothesis": "猫が走る", "label": "contradiction"},
            {"premise": "今日は雨", "hypothesis": "傘がある", "label": "neutral"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path),
                               text_column="premise", text_pair_column="hypothesis"))
    assert data.train.column_names == ["text", "text_pair", "labels"]
    assert data.train[0] == {"text": "犬が走る", "text_pair": "動物が動く", "labels": data.label2id["entailment"]}
    with pytest.raises(UserError, match=r"no column --text_pair_column 'hypo'.*did you mean 'hypothesis'"):
        prepare_data(data_config(tmp_path, train_file=str(path), text_column="premise", text_pair_column="hypo"))


# --------------------------------------------------------------------------- splits


def labelled_rows(counts: dict[str, int]) -> list[dict]:
    return [{"text": f"{label}の文{i}", "label": label} for label, n in counts.items() for i in range(n)]


def test_split_is_seeded_shuffled_and_stratified(tmp_path):
    counts = {"a": 60, "b": 30, "c": 10}
    path = write_csv(tmp_path / "train.csv", labelled_rows(counts))  # sorted by class: a "first 80%" split would drop c
    first = prepare_data(data_config(tmp_path, train_file=str(path), validation_split=0.2, seed=1))
    second = prepare_data(data_config(tmp_path, train_file=str(path), validation_split=0.2, seed=1))
    other = prepare_data(data_config(tmp_path, train_file=str(path), validation_split=0.2, seed=2))
    assert list(first.validation["text"]) == list(second.validation["text"]) and list(first.train["text"]) == list(second.train["text"])
    assert list(first.validation["text"]) != list(other.validation["text"])
    assert len(first.validation) == 20 and len(first.train) == 80
    assert not set(list(first.validation["text"])) & set(list(first.train["text"]))
    assert Counter(label for _, label in decoded(first, "validation")) == {"a": 12, "b": 6, "c": 2}
    assert Counter(label for _, label in decoded(first, "train")) == {"a": 48, "b": 24, "c": 8}
    assert first.stats["validation"]["stratified"] and first.stats["validation"]["seed"] == 1
    assert first.stats["train"]["rows_held_out_for_validation"] == 20


def test_regression_and_multi_label_use_a_plain_seeded_split(tmp_path):
    rows = [{"text": f"文{i}", "label": f"{i / 7:.3f}"} for i in range(1, 41)]
    path = write_csv(tmp_path / "train.csv", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_split=0.25, seed=3))
    again = prepare_data(data_config(tmp_path, train_file=str(path), validation_split=0.25, seed=3))
    assert len(data.validation) == 10 and list(data.validation["text"]) == list(again.validation["text"])
    assert list(data.validation["text"]) != [row["text"] for row in rows[-10:]]  # not the tail of the file
    assert data.stats["validation"]["stratified"] is False


def test_class_with_one_example_cannot_be_stratified(tmp_path):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 5, "b": 5, "稀": 1}))
    with pytest.raises(UserError) as err:
        prepare_data(data_config(tmp_path, train_file=str(path)))
    assert "'稀'" in str(err.value) and "--validation_file" in str(err.value)


def test_validation_split_too_small_for_the_classes(tmp_path):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 10, "b": 10, "c": 10}))
    with pytest.raises(UserError, match=r"1 validation rows, fewer than the 3 classes"):
        prepare_data(data_config(tmp_path, train_file=str(path), validation_split=0.01))


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"--train_file .*nope\.csv does not exist"):
        prepare_data(data_config(tmp_path, train_file=str(tmp_path / "nope.csv")))


def test_missing_column_lists_the_columns_that_exist(tmp_path):
    path = write_csv(tmp_path / "train.csv", [{"Text": "よい", "sentiment": "pos"}])
    with pytest.raises(UserError) as err:
        prepare_data(data_config(tmp_path, train_file=str(path)))
    message = str(err.value)
    assert "'text'" in message and "did you mean 'Text'" in message and "'label'" in message
    assert "['Text', 'sentiment']" in message and "--text_column" in message


def test_header_only_file_and_headerless_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no data rows"):
        prepare_data(data_config(tmp_path, train_file=str(empty)))
    headerless = tmp_path / "headerless.tsv"
    headerless.write_text("id1\t0\t良い\nid2\t1\t悪い\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"its columns are \['id1', '0', '良い'\] \(the first line .* header row\)"):
        prepare_data(data_config(tmp_path, train_file=str(headerless)))


def test_clean_up_is_applied_and_switchable(tmp_path):
    rows = [{"text": "ＡＢＣ１２３\u3000ｶﾀｶﾅ\n改行\u200b", "label": "a"}, {"text": "b", "label": "b"}]
    path = write_csv(tmp_path / "train.csv", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    assert list(data.train["text"])[0] == "ABC123 カタカナ 改行"
    raw = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), nfkc=False,
                              remove_control=False, normalize_whitespace=False))
    assert list(raw.train["text"])[0] == rows[0]["text"]
    only_nfkc = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), normalize_whitespace=False))
    assert list(only_nfkc.train["text"])[0] == "ABC123 カタカナ\n改行"  # NFKC turns \u3000 into a plain space


def test_empty_texts_and_missing_labels_are_skipped_and_counted(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nよい,pos\n,pos\n \u3000\n,\nわるい,\nふつう,neu\n\u200b,neg\nだめ,neg\n", encoding="utf-8")
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    stats = data.stats["train"]
    assert decoded(data) == [("よい", "pos"), ("ふつう", "neu"), ("だめ", "neg")]
    assert stats["rows_read"] == 8 and stats["rows_used"] == 3
    assert stats["skipped_empty_text"] == 4 and stats["skipped_missing_label"] == 1
    assert stats["skipped_examples"][:2] == ["line 3: empty text", "line 4: empty text"]
    with pytest.raises(UserError, match=r"line 3: empty or missing text in column 'text'.*--strict"):
        prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), strict=True))
    only_label_missing = tmp_path / "labels.csv"
    only_label_missing.write_text("text,label\nよい,pos\nわるい,\nだめ,neg\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 3: missing label"):
        prepare_data(data_config(tmp_path, train_file=str(only_label_missing), validation_file=str(path), strict=True))


def test_empty_second_text_of_a_pair_is_skipped(tmp_path):
    rows = [{"a": "犬", "b": "動物", "label": "x"}, {"a": "猫", "b": "", "label": "y"}, {"a": "鳥", "b": "空", "label": "y"}]
    path = write_csv(tmp_path / "train.csv", rows)
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), text_column="a", text_pair_column="b"))
    assert len(data.train) == 2 and data.stats["train"]["skipped_empty_text_pair"] == 1


def test_numbers_in_the_text_column_become_strings(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": 12345, "label": "a"}, {"text": 1.5, "label": "b"}, {"text": 3.0, "label": "b"}])
    data = prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))
    assert list(data.train["text"]) == ["12345", "1.5", "3"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": {"nested": 1}, "label": "a"}])
    with pytest.raises(UserError, match=r"line 1: column 'text' holds a dict"):
        prepare_data(data_config(tmp_path, train_file=str(bad), validation_file=str(path)))


def test_labels_unseen_in_training_are_listed_with_their_file(tmp_path):
    train = write_csv(tmp_path / "train.csv", labelled_rows({"a": 2, "b": 2}))
    validation = write_csv(tmp_path / "validation.csv", labelled_rows({"a": 1, "c": 2, "d": 1}))
    with pytest.raises(UserError) as err:
        prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(validation)))
    message = str(err.value)
    assert str(validation) in message and "'c' (2 rows), 'd' (1 rows)" in message and "['a', 'b']" in message
    test = write_csv(tmp_path / "test.csv", labelled_rows({"e": 1}))
    with pytest.raises(UserError, match=r"test\.csv has labels that never occur.*'e'"):
        prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(train), test_file=str(test)))


def test_unseen_multi_labels_are_an_error_too(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["y"]}])
    validation = write_jsonl(tmp_path / "validation.jsonl", [{"text": "a", "label": ["x", "z"]}])
    with pytest.raises(UserError, match=r"'z' \(1 rows\)"):
        prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(validation)))


def test_test_file_without_labels(tmp_path):
    train = write_csv(tmp_path / "train.csv", ROWS)
    no_column = write_csv(tmp_path / "test.csv", [{"text": "よい"}, {"text": "わるい"}])
    data = prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(train), test_file=str(no_column)))
    assert data.test.column_names == ["text"] and list(data.test["text"]) == ["よい", "わるい"]
    assert data.stats["test"]["has_labels"] is False
    empty_column = write_csv(tmp_path / "test2.csv", [{"text": "よい", "label": ""}, {"text": "わるい", "label": ""}])
    data = prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(train), test_file=str(empty_column)))
    assert data.test.column_names == ["text"] and len(data.test) == 2
    partly = write_csv(tmp_path / "test3.csv", [{"text": "よい", "label": "positive"}, {"text": "わるい", "label": ""}])
    data = prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(train), test_file=str(partly)))
    assert decoded(data, "test") == [("よい", "positive")] and data.stats["test"]["skipped_missing_label"] == 1


def test_one_class_only_is_an_error(tmp_path):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"only": 4}))
    with pytest.raises(UserError, match="only one class"):
        prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path)))


def test_single_label_task_with_list_labels_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["y"]}])
    with pytest.raises(UserError, match=r"line 1: a list label .*--task multi_label"):
        prepare_data(data_config(tmp_path, train_file=str(path), validation_file=str(path), task="single_label"))


def test_overlap_between_validation_and_train_is_counted(tmp_path):
    train = write_csv(tmp_path / "train.csv", ROWS)
    data = prepare_data(data_config(tmp_path, train_file=str(train), validation_file=str(train)))
    assert data.stats["validation"]["texts_also_in_train"] == len(ROWS)


# --------------------------------------------------------------------------- tokenization


def make_fast_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    write_tiny_japanese_tokenizer(directory)
    return BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=False, tokenize_chinese_chars=True)


@pytest.mark.parametrize("kind", ["slow", "fast"])
@pytest.mark.parametrize("has_pair", [False, True])
def test_tokenize_dataset_matches_the_tokenizer_and_counts_truncation(tmp_path, kind, has_pair):
    tokenizer = write_tiny_japanese_tokenizer(tmp_path / "tok") if kind == "slow" else make_fast_tokenizer(tmp_path / "tok")
    texts = ["この商品はとても良いです。", "今日は雨", "最悪の料理でした。" * 4, "猫", "犬が走る。" * 6]
    pairs = ["今日の天気は晴れです。" * 3, "ホテルの部屋", "普通", "猫が寝る" * 5, "犬"]
    columns = {"text": texts, "labels": [0, 1, 2, 0, 1]}
    if has_pair:
        columns["text_pair"] = pairs
    dataset = datasets.Dataset.from_dict(columns)
    max_length = 16
    tokenized, truncated = tokenize_dataset(dataset, tokenizer, max_length, has_pair)
    reference = tokenizer(texts, pairs if has_pair else None, truncation=True, max_length=max_length)
    assert set(tokenized.column_names) == {"labels", "input_ids", "attention_mask", "token_type_ids"}
    assert list(tokenized["input_ids"]) == reference["input_ids"]
    assert list(tokenized["token_type_ids"]) == reference["token_type_ids"]
    assert list(tokenized["attention_mask"]) == reference["attention_mask"]
    assert list(tokenized["labels"]) == [0, 1, 2, 0, 1]
    full = tokenizer(texts, pairs if has_pair else None)
    assert truncated == sum(len(ids) > max_length for ids in full["input_ids"]) > 0
    assert max(len(ids) for ids in list(tokenized["input_ids"])) == max_length
    again, _ = tokenize_dataset(dataset, tokenizer, max_length, has_pair)
    assert list(again["input_ids"]) == list(tokenized["input_ids"])
    with pytest.raises(UserError, match="no room"):
        tokenize_dataset(dataset, tokenizer, 3 if has_pair else 2, has_pair)
    empty, count = tokenize_dataset(dataset.select([]), tokenizer, max_length, has_pair)
    assert len(empty) == 0 and count == 0


def test_tokenize_prepared_quickstart_data(tmp_path):
    tokenizer = write_tiny_japanese_tokenizer(tmp_path / "tok")
    data = prepare_data(data_config(tmp_path, train_file=str(QUICKSTART / "validation.csv"), validation_file=str(QUICKSTART / "test.csv")))
    tokenized, truncated = tokenize_dataset(data.validation, tokenizer, 128, has_pair=False)
    assert truncated == 0 and len(tokenized) == 60
    assert all(ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id for ids in list(tokenized["input_ids"]))


def test_tokenizing_into_a_log_file_draws_no_progress_bar(tmp_path, capsys):
    """Not a terminal (pytest's captured stderr, like CI or nohup): no redrawn bar, and the switch is restored."""
    tokenizer = write_tiny_japanese_tokenizer(tmp_path / "tok")
    dataset = datasets.Dataset.from_dict({"text": ["今日は雨"] * 600, "labels": [0] * 600})
    datasets.enable_progress_bars()
    tokenize_dataset(dataset, tokenizer, 16, has_pair=False)
    err = capsys.readouterr().err
    assert "tokenizing" not in err and "\r" not in err
    assert not datasets.are_progress_bars_disabled()


# --------------------------------------------------------------------------- the demo data set


def test_quickstart_data_set():
    cfg = TrainConfig(train_file=str(QUICKSTART / "train.csv"), validation_file=str(QUICKSTART / "validation.csv"),
                      test_file=str(QUICKSTART / "test.csv"), from_scratch="tiny")
    data = prepare_data(cfg)
    assert data.label_names == ["ニュートラル", "ネガティブ", "ポジティブ"]
    assert (len(data.train), len(data.validation), len(data.test)) == (300, 60, 60)
    for split in ("train", "validation", "test"):
        assert set(data.stats[split]["label_counts"].values()) == {len(getattr(data, split)) // 3}
        assert data.stats[split]["skipped_empty_text"] == 0
    all_texts = list(data.train["text"]) + list(data.validation["text"]) + list(data.test["text"])
    assert len(set(all_texts)) == len(all_texts)
    assert all(5 <= len(text) <= 60 for text in all_texts)
    assert not any("\n" in text or "\u3000" in text or "ｻ" in text for text in all_texts)  # cleaned up


def test_quickstart_csvs_are_reproducible_from_the_script(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_quickstart", QUICKSTART / "make_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUTPUT_DIR", tmp_path)
    module.main()
    for name in ("train.csv", "validation.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (QUICKSTART / name).read_bytes(), name


# --------------------------------------------------------------------------- real data (../shared/data)


@pytest.mark.shared_data
def test_real_jglue_pairs_and_regression(tmp_path):
    jnli = SHARED_DATA / "jglue_jnli_valid.jsonl"
    jsts = SHARED_DATA / "jglue_jsts_valid.jsonl"
    if not (jnli.is_file() and jsts.is_file()):
        pytest.skip(f"real data not found in {SHARED_DATA}")
    nli = prepare_data(data_config(tmp_path, train_file=str(jnli), text_column="sentence1", text_pair_column="sentence2", validation_split=0.1))
    assert nli.problem_type == "single_label_classification"
    assert nli.label_names == ["contradiction", "entailment", "neutral"]
    assert len(nli.train) + len(nli.validation) == 2434 and len(nli.validation) == 244
    assert not any("１" in text for text in list(nli.train["text"]))  # NFKC applied to the full-width digits
    sts = prepare_data(data_config(tmp_path, train_file=str(jsts), text_column="sentence1", text_pair_column="sentence2", validation_split=0.1))
    assert sts.problem_type == "regression" and len(sts.train) + len(sts.validation) == 1457
    assert 0.0 <= min(list(sts.train["labels"])) and max(list(sts.train["labels"])) <= 5.0


# --------------------------------------------------------------------------- the stage's options


def test_train_config_provides_every_data_option():
    """The data stage reads a `DataOptions` protocol; TrainConfig must keep offering all of it."""
    from dataclasses import fields
    from typing import get_type_hints

    from jbert.data import DataOptions

    needed = set(get_type_hints(DataOptions))
    assert needed and needed <= {f.name for f in fields(TrainConfig)}


def test_a_plain_object_with_the_data_options_is_enough(tmp_path):
    """prepare_data needs no TrainConfig: any object with the DataOptions attributes works."""
    from types import SimpleNamespace

    path = write_csv(tmp_path / "train.csv", ROWS)
    options = SimpleNamespace(
        train_file=str(path), validation_file=str(path), test_file=None, encoding="auto", text_column="text",
        text_pair_column=None, label_column="label", task="auto", label_delimiter=None, validation_split=0.1,
        seed=0, strict=False, nfkc=True, remove_control=True, normalize_whitespace=True,
    )
    data = prepare_data(options)
    assert data.label_names == ["negative", "neutral", "positive"]
    assert decoded(data)[0] == ("この商品はとても良いです。", "positive")
