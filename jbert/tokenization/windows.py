"""Long texts as overlapping windows of token ids, the same with every tokenizer jbert uses.

`encode_windows(tokenizer, texts, text_pairs, max_length, stride)` gives one `WindowedText` per
text (or pair): its windows, each with the special tokens the tokenizer adds (`[CLS] ... [SEP]`,
`<s> ... </s>`), laid out by `jbert.core.windows.window_spans`. A text that fits in `max_length`
gets one window identical to what `tokenizer(text, truncation=True, max_length=N)` gives, so short
texts are treated exactly as before windows existed.

It takes every tokenizer of the project and keeps each one's own way of adding special tokens:
- jbert's serving tokenizers: `FastBertJapaneseTokenizer` (MeCab + WordPiece ids, [CLS]/[SEP] as
  BertJapaneseTokenizer adds them) and `FastJsonTokenizer` (a `tokenizers.Tokenizer`);
  `ReferenceTokenizer` (the transformers fallback) through the transformers tokenizer it wraps;
- transformers tokenizers (training): fast ones through their Rust backend, whose own
  post-processor adds the special tokens to each window; slow ones (BertJapaneseTokenizer) through
  `build_inputs_with_special_tokens`.
No torch; transformers only where the caller already passed one of its tokenizers.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from jbert.core.windows import window_spans
from jbert.tokenization.encoded import EncodedText, build_encoding, check_inputs


class WindowedText(NamedTuple):
    """The windows of one text (or pair): at least one, in reading order."""

    windows: tuple[EncodedText, ...]
    truncated: bool  # tokens were cut: a pair whose first text left no room to window the second

    @property
    def input_ids(self) -> list[int]:
        """The first window's ids (its length is what batching by length needs)."""
        return self.windows[0].input_ids

    @property
    def token_type_ids(self) -> list[int]:
        """The first window's segment ids."""
        return self.windows[0].token_type_ids


def encode_windows(tokenizer, texts: Sequence[str], text_pairs: Sequence[str] | None, max_length: int,
                   stride: int) -> list[WindowedText]:
    """Each text (or pair: the second text is windowed) as windows of at most `max_length` tokens.

    `stride`: tokens shared by consecutive windows (checked by the caller with
    `jbert.core.windows.check_stride`). Texts are tokenized once, whole: bound their length first
    (the serving runtime's character limit does).
    """
    check_inputs(texts, text_pairs)
    if not texts:
        return []
    rust = _rust_tokenizer(tokenizer)
    if rust is not None:
        return _rust_windows(rust, tokenizer, texts, text_pairs, max_length, stride)
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "build_inputs_with_special_tokens"):  # ReferenceTokenizer
        return encode_windows(inner, texts, text_pairs, max_length, stride)
    if hasattr(tokenizer, "tokenize_ids"):  # FastBertJapaneseTokenizer
        ids = tokenizer.tokenize_ids(list(texts) + list(text_pairs or []))
        assemble = _bert_assembler(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.truncation_side)
        specials = (2, 3)
    elif hasattr(tokenizer, "build_inputs_with_special_tokens"):  # a slow transformers tokenizer
        ids = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) for text in [*texts, *(text_pairs or [])]]
        assemble = _transformers_assembler(tokenizer)
        specials = (tokenizer.num_special_tokens_to_add(pair=False), tokenizer.num_special_tokens_to_add(pair=True))
    else:
        raise TypeError(f"{type(tokenizer).__name__} cannot encode windows")
    first, second = ids[: len(texts)], (ids[len(texts):] if text_pairs is not None else [None] * len(texts))
    return [_python_windows(a, b, max_length, stride, specials, assemble) for a, b in zip(first, second)]


def _python_windows(ids: list[int], pair_ids: list[int] | None, max_length: int, stride: int,
                    specials: tuple[int, int], assemble) -> WindowedText:
    """Windows of content ids, special tokens added by `assemble(ids, pair_ids, cut_to)`."""
    if pair_ids is None:
        width = max_length - specials[0]
        if len(ids) <= width:
            return WindowedText((assemble(ids, None, None),), False)
        return WindowedText(tuple(assemble(ids[s:e], None, None) for s, e in window_spans(len(ids), width, stride)), False)
    if len(ids) + len(pair_ids) + specials[1] <= max_length:
        return WindowedText((assemble(ids, pair_ids, None),), False)
    width = max_length - specials[1] - len(ids)
    if width <= stride:  # the first text leaves no room to move on: cut as `truncation=True` would
        return WindowedText((assemble(ids, pair_ids, max_length),), True)
    return WindowedText(tuple(assemble(ids, pair_ids[s:e], None)
                              for s, e in window_spans(len(pair_ids), width, stride)), False)


def _bert_assembler(cls_id: int, sep_id: int, side: str):
    def assemble(ids, pair_ids, cut_to):
        return build_encoding(ids, pair_ids, cut_to, cls_id, sep_id, side)

    return assemble


def _transformers_assembler(tokenizer):
    def assemble(ids, pair_ids, cut_to):
        if cut_to is not None:
            encoded = tokenizer.prepare_for_model(ids, pair_ids, add_special_tokens=True, truncation="longest_first",
                                                  max_length=cut_to, return_token_type_ids=True)
            return EncodedText(encoded["input_ids"], encoded["token_type_ids"], True)
        input_ids = tokenizer.build_inputs_with_special_tokens(ids, pair_ids)
        type_ids = tokenizer.create_token_type_ids_from_sequences(ids, pair_ids)
        return EncodedText(list(input_ids), list(type_ids), False)

    return assemble


def _rust_tokenizer(tokenizer):
    """The `tokenizers.Tokenizer` doing the work, copied without truncation or padding; None for others."""
    from tokenizers import Tokenizer

    backend = tokenizer.tokenizer if isinstance(getattr(tokenizer, "tokenizer", None), Tokenizer) else None
    if backend is None and getattr(tokenizer, "is_fast", False) and hasattr(tokenizer, "backend_tokenizer"):
        backend = tokenizer.backend_tokenizer  # a transformers fast tokenizer
    if backend is None:
        return None
    if backend.truncation is None and backend.padding is None:
        return backend
    # A transformers tokenizer leaves its last call's truncation set; a copy keeps the caller's own intact.
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _rust_windows(rust, tokenizer, texts, text_pairs, max_length: int, stride: int) -> list[WindowedText]:
    """Windows cut by the Rust `Encoding.truncate(width, stride)`, special tokens by the tokenizer's post-processor."""
    result = []
    contents = rust.encode_batch_fast(list(texts), add_special_tokens=False)
    pair_contents = (rust.encode_batch_fast(list(text_pairs), add_special_tokens=False)
                     if text_pairs is not None else [None] * len(texts))
    single_specials, pair_specials = rust.num_special_tokens_to_add(False), rust.num_special_tokens_to_add(True)
    for index, (content, pair) in enumerate(zip(contents, pair_contents)):
        if pair is None:
            pieces = _rust_pieces(content, max_length - single_specials, stride)
            windows = tuple(_rust_encoded(rust.post_process(piece, None, True)) for piece in pieces)
            result.append(WindowedText(windows, False))
            continue
        width = max_length - pair_specials - len(content.ids)
        if len(pair.ids) <= width:
            result.append(WindowedText((_rust_encoded(rust.post_process(content, pair, True)),), False))
        elif width <= stride:  # no room to window the second text: cut as the tokenizer would
            cut = tokenizer.encode_batch([texts[index]], [text_pairs[index]], max_length=max_length)[0] \
                if hasattr(tokenizer, "encode_batch") else _transformers_cut(tokenizer, texts[index], text_pairs[index], max_length)
            result.append(WindowedText((EncodedText(list(cut.input_ids), list(cut.token_type_ids), True),), True))
        else:
            windows = tuple(_rust_encoded(rust.post_process(content, piece, True))
                            for piece in _rust_pieces(pair, width, stride))
            result.append(WindowedText(windows, False))
    return result


def _rust_pieces(encoding, width: int, stride: int) -> list:
    """The encoding cut into windows in place by the Rust tokenizer itself (the layout of `window_spans`)."""
    if len(encoding.ids) <= width:
        return [encoding]
    encoding.truncate(width, stride=stride, direction="right")
    return [encoding, *encoding.overflowing]


def _rust_encoded(encoding) -> EncodedText:
    return EncodedText(list(encoding.ids), list(encoding.type_ids), False)


def _transformers_cut(tokenizer, text: str, text_pair: str, max_length: int) -> EncodedText:
    encoded = tokenizer(text, text_pair, truncation=True, max_length=max_length, return_token_type_ids=True)
    return EncodedText(list(encoded["input_ids"]), list(encoded["token_type_ids"]), True)
