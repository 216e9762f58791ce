"""The data of --task distill: labels in the teacher's order, unlabeled texts, the student's tokenizer, soft targets.

The student predicts the teacher's labels in the teacher's order (so the soft targets and the hard
labels index the same classes), whatever subset of them the data holds.
"""

from __future__ import annotations

import logging

import datasets
import numpy as np

from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig
from jbert.data.labels import MULTI_LABEL, SINGLE_LABEL
from jbert.data.unlabeled import read_unlabeled_texts
from jbert.train.distill_teacher import REGRESSION, Teacher, ensemble_probabilities
from jbert.train.modeling import load_run_tokenizer

logger = logging.getLogger("jbert")


def teacher_label_order(prepared, teacher_labels: list[str]):
    """`prepared` with its label ids renumbered to the teacher's label order (and the teacher's label names)."""
    if prepared.problem_type not in (SINGLE_LABEL, MULTI_LABEL) or prepared.label_names == teacher_labels:
        return prepared
    position = [teacher_labels.index(name) for name in prepared.label_names]
    for role in ("train", "validation", "test"):
        split = getattr(prepared, role)
        if split is None or "labels" not in split.column_names:
            continue
        if prepared.problem_type == SINGLE_LABEL:
            values = [position[int(label)] for label in split["labels"]]
            feature = datasets.ClassLabel(names=teacher_labels)
        else:
            values = []
            for row in split["labels"]:
                renumbered = [0.0] * len(teacher_labels)
                for index, value in enumerate(row):
                    renumbered[position[index]] = value
                values.append(renumbered)
            feature = datasets.List(datasets.Value("float32"))
        split = split.remove_columns("labels").add_column("labels", values).cast_column("labels", feature)
        setattr(prepared, role, split)
    prepared.label_names = list(teacher_labels)
    return prepared


def unlabeled_texts(config, teacher: Teacher) -> list[str]:
    """The cleaned texts of --unlabeled_file ([] without one); an empty file or pair data is a UserError."""
    if not config.unlabeled_file:
        return []
    if teacher.is_pair:
        raise UserError("--unlabeled_file holds single texts, but the teacher classifies sentence pairs; "
                        "drop --unlabeled_file (pairs without labels are not supported yet)")
    normalization = NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace)
    try:
        texts = read_unlabeled_texts(config.unlabeled_file, config.text_column, config.encoding, normalization)
    except UserError as err:
        # The reader names --train_file (it serves --task mlm); here the file came from --unlabeled_file.
        raise UserError(str(err).replace("--train_file", "--unlabeled_file")) from None
    logger.info("--unlabeled_file %s: %d texts", config.unlabeled_file, len(texts))
    return texts


def unlabeled_dataset(texts: list[str], prepared) -> datasets.Dataset:
    """The unlabeled texts as a dataset with placeholder labels (masked out of the hard loss)."""
    if prepared.problem_type == SINGLE_LABEL:
        labels, feature = [0] * len(texts), datasets.ClassLabel(names=prepared.label_names)
    elif prepared.problem_type == MULTI_LABEL:
        labels = [[0.0] * len(prepared.label_names) for _ in texts]
        feature = datasets.List(datasets.Value("float32"))
    else:
        labels, feature = [0.0] * len(texts), datasets.Value("float32")
    features = datasets.Features({"text": datasets.Value("string"), "labels": feature})
    return datasets.Dataset.from_dict({"text": texts, "labels": labels}, features=features)


def with_soft_targets(train_set: datasets.Dataset, train_logits: np.ndarray, extra_set: datasets.Dataset | None,
                      extra_logits: np.ndarray, problem_type: str, temperature: float) -> datasets.Dataset:
    """Training examples with "soft_targets" (the teachers' mean probabilities) and "label_mask"; unlabeled appended."""
    def add(dataset: datasets.Dataset, logits: np.ndarray, labelled: bool) -> datasets.Dataset:
        targets = ensemble_probabilities(logits, problem_type, temperature)
        if problem_type == REGRESSION:
            targets = targets.reshape(len(dataset), -1)[:, :1]
        dataset = dataset.add_column("soft_targets", targets.tolist())
        return dataset.add_column("label_mask", [labelled] * len(dataset))

    combined = add(train_set, train_logits, True)
    if extra_set is not None and len(extra_set):
        extra = add(extra_set, extra_logits, False).select_columns(combined.column_names)
        combined = datasets.concatenate_datasets([combined, extra.cast(combined.features)])
    return combined


def student_tokenizer(config, accelerator, teachers: list[Teacher], prepared, extra_texts: list[str]):
    """The teacher's tokenizer (--student_layers; --from_scratch with --distill_tokenizer teacher), else the run's own.

    The student and a teacher whose layers or vocabulary it takes must agree on the token ids: an
    ensemble of different vocabularies, or a --tokenizer_name other than the teacher's, is refused.
    """
    shares_teachers = bool(config.student_layers) or (config.from_scratch and config.distill_tokenizer == "teacher")
    if not shares_teachers:
        def vocabulary_texts() -> list[str]:
            texts = list(prepared.train["text"]) + list(extra_texts)
            if config.text_pair_column is not None:
                texts += list(prepared.train["text_pair"])
            return texts

        return load_run_tokenizer(config, accelerator, vocabulary_texts, config.max_length)
    tokenizer = teachers[0].tokenizer
    vocabulary = tokenizer.get_vocab()
    for other in teachers[1:]:
        if other.tokenizer.get_vocab() != vocabulary:
            raise UserError(f"--teacher: {teachers[0].path} and {other.path} have different vocabularies, so the "
                            "student cannot share 'the teacher's tokenizer'; use --distill_tokenizer own")
    if config.tokenizer_name:
        from jbert.tokenization import load_tokenizer

        chosen = load_tokenizer(config.tokenizer_name, mecab_dic=config.mecab_dic)
        if chosen.get_vocab() != vocabulary or type(chosen).__name__ != type(tokenizer).__name__:
            raise UserError(f"--tokenizer_name {config.tokenizer_name} does not match the tokenizer of --teacher "
                            f"{teachers[0].path} ({type(tokenizer).__name__}, {len(vocabulary)} tokens), which the "
                            "student shares; drop --tokenizer_name, or use --distill_tokenizer own with --from_scratch")
        tokenizer = chosen
    return tokenizer
