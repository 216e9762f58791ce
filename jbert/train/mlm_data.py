"""Masked-LM inputs: tokens with word boundaries, packed or truncated sequences, whole-word masking.

Japanese BERTs (cl-tohoku) were pretrained with whole-word masking over MeCab words: when a word
is chosen, every WordPiece piece of it is masked together, so the model cannot fill in "##ホテル"
from the visible "ビジネス" half of the same word. BertJapaneseTokenizer splits text into MeCab
words first and WordPiece-splits each word, so a piece that starts with "##" continues the word
before it and every other piece starts a word: the "##" prefix marks the MeCab boundaries exactly.

15% of the (non-special) tokens of a sequence are selected word by word; of the selected tokens
80% become [MASK], 10% a random token and 10% stay as they are (BERT's 80/10/10 rule). Labels
are the original ids at selected positions and -100 everywhere else.
"""

from __future__ import annotations

import math

import numpy as np
import torch

IGNORE_INDEX = -100
CONTINUATION_PREFIX = "##"


def tokenize_with_word_starts(texts: list[str], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(ids, word_starts) per text, without special tokens; word_starts[i] is 1 where a word begins."""
    encoded = []
    for text in texts:
        tokens = tokenizer.tokenize(text)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        starts = [0 if token.startswith(CONTINUATION_PREFIX) else 1 for token in tokens]
        encoded.append((ids, starts))
    return encoded


def build_sequences(encoded: list[tuple[list[int], list[int]]], tokenizer, max_length: int,
                    pack: bool) -> tuple[list[dict], int]:
    """Model sequences [CLS] ... [SEP] of at most `max_length` tokens; returns (sequences, truncated).

    pack=True concatenates the texts ([SEP] between two texts) and cuts the stream into full
    sequences, so no compute is spent on padding and no text is lost; pack=False keeps one text per
    sequence and truncates longer ones (counted). A word cut by a sequence boundary is masked as
    two words, one on each side.
    """
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    room = max_length - 2
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room next to [CLS] and [SEP]")
    sequences: list[dict] = []
    truncated = 0

    def emit(ids: list[int], starts: list[int]) -> None:
        # special tokens get word_start -1: never masked, and they end the word before them
        sequences.append({"input_ids": [cls_id] + ids + [sep_id], "word_starts": [-1] + starts + [-1],
                          "index": len(sequences)})

    if not pack:
        for ids, starts in encoded:
            if not ids:
                continue
            if len(ids) > room:
                truncated += 1
            emit(ids[:room], starts[:room])
        return sequences, truncated
    stream_ids: list[int] = []
    stream_starts: list[int] = []
    for ids, starts in encoded:
        if not ids:
            continue
        if stream_ids:
            stream_ids.append(sep_id)
            stream_starts.append(-1)
        stream_ids += ids
        stream_starts += starts
    for begin in range(0, len(stream_ids), room):
        ids, starts = stream_ids[begin : begin + room], stream_starts[begin : begin + room]
        if ids and starts[0] == -1:  # a chunk never opens with the [SEP] between two texts
            ids, starts = ids[1:], starts[1:]
        if ids:
            emit(ids, starts)
    return sequences, truncated


def word_spans(word_starts: list[int]) -> list[list[int]]:
    """Positions of each whole word: a start token and the continuation tokens that follow it."""
    spans: list[list[int]] = []
    previous_special = True
    for position, start in enumerate(word_starts):
        if start == -1:
            previous_special = True
            continue
        if start == 1 or previous_special or not spans:
            spans.append([position])
        else:
            spans[-1].append(position)
        previous_special = False
    return spans


def mask_whole_words(input_ids: list[int], word_starts: list[int], mask_token_id: int, vocab_size: int,
                     special_ids: set[int], probability: float = 0.15,
                     generator: torch.Generator | None = None) -> tuple[list[int], list[int]]:
    """Whole-word masking of one sequence; returns (masked input ids, labels with -100 elsewhere).

    Words are visited in random order and taken while the selected tokens stay within
    round(probability x tokens) (at least one word), as Google's create_pretraining_data does.
    Draws from `generator` (torch's global RNG when None).
    """
    spans = word_spans(word_starts)
    labels = [IGNORE_INDEX] * len(input_ids)
    masked = list(input_ids)
    if not spans:
        return masked, labels
    token_count = sum(len(span) for span in spans)
    budget = max(1, int(round(token_count * probability)))
    order = torch.randperm(len(spans), generator=generator).tolist()
    chosen: list[int] = []
    for index in order:
        if len(chosen) >= budget:
            break
        span = spans[index]
        if chosen and len(chosen) + len(span) > budget:
            continue
        chosen += span
    decisions = torch.rand(len(chosen), generator=generator).tolist()
    random_tokens = torch.randint(vocab_size, (len(chosen),), generator=generator).tolist()
    for position, decision, random_token in zip(chosen, decisions, random_tokens):
        labels[position] = input_ids[position]
        if decision < 0.8:
            masked[position] = mask_token_id
        elif decision < 0.9:
            # a random real token, never a special one ([PAD], [CLS] ... carry no meaning to guess)
            masked[position] = random_token if random_token not in special_ids else mask_token_id
    return masked, labels


class WholeWordMaskCollator:
    """Pads a batch and masks it on the fly, a fresh mask per epoch; pre-masked examples pass through.

    Each example's mask is drawn from its own generator seeded by (seed, epoch, example index), not
    from a shared RNG: Accelerate's dataloader collates one batch ahead, so a shared RNG would be at
    a different point after a resume, and the masks (and weights) would drift from an uninterrupted run.
    The epoch is the training sampler's (Accelerate sets it on the sampler every epoch) when one is
    given, else what `set_epoch` set.
    """

    def __init__(self, tokenizer, probability: float = 0.15, pad_to_multiple_of: int | None = None, seed: int = 0,
                 sampler=None):
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids)
        self.probability = probability
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.sampler = sampler
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """The epoch whose masks are drawn."""
        return self.sampler.epoch if self.sampler is not None else self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Masks depend on the epoch, so every pass over the data predicts other words."""
        self._epoch = epoch

    def mask(self, example: dict, generator: torch.Generator | None = None) -> dict:
        """One example with "input_ids" masked and "labels" set."""
        masked, labels = mask_whole_words(example["input_ids"], example["word_starts"], self.mask_token_id,
                                          self.vocab_size, self.special_ids, self.probability, generator)
        return {"input_ids": masked, "labels": labels}

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + index) % 2**63)

    def __call__(self, examples: list[dict]) -> dict:
        if "labels" not in examples[0]:
            examples = [self.mask(example, self._generator(example["index"])) for example in examples]
        longest = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = np.full((len(examples), longest), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(examples), longest), IGNORE_INDEX, dtype=np.int64)
        attention = np.zeros((len(examples), longest), dtype=np.int64)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            input_ids[row, :length] = example["input_ids"]
            labels[row, :length] = example["labels"]
            attention[row, :length] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention),
                "token_type_ids": torch.zeros_like(torch.from_numpy(input_ids)), "labels": torch.from_numpy(labels)}


def premask(sequences: list[dict], collator: WholeWordMaskCollator, seed: int) -> list[dict]:
    """Mask validation sequences once with a fixed seed, so every evaluation scores the same task."""
    generator = torch.Generator().manual_seed(seed)
    return [collator.mask(sequence, generator) for sequence in sequences]
