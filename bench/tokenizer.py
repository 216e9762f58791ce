"""Tokenisation alone: transformers' BertJapaneseTokenizer against jbert's fast serving tokenizer.

Same texts, same vocabulary, same settings, in one run; the ids are compared as well (they must be
identical). Prints one JSON object: texts per second of each, and the ratio (target: at least 3x).

    python bench/tokenizer.py                          # ../shared/data when present, else data/quickstart
    python bench/tokenizer.py --tokenizer DIR          # any BertJapaneseTokenizer directory, e.g. a
                                                       # downloaded cl-tohoku/bert-base-japanese-v3

Without --tokenizer a 32,768-entry-budget WordPiece vocabulary is trained on the benchmark texts
with `jbert.tokenization.train_japanese_wordpiece` (MeCab unidic-lite), like a cl-tohoku v3 model.
Texts are cleaned with `jbert.core.normalize.normalize_text` first, as serving does. Each side is timed as
the best of --repeats passes over all texts in batches of --batch-size. The fast path memoises
WordPiece ids per word, so it is timed twice: warm (words seen in an earlier pass, as in a server
that has run a while) and cold (cache emptied before every pass, as right after start-up).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def load_texts() -> tuple[list[str], list[tuple[str, str]], str]:
    """(single texts, sentence pairs, description) from ../shared/data or the quickstart demo set."""
    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    rhr = SHARED_DATA / "jrte_rhr.tsv"
    if rhr.is_file():
        with open(rhr, encoding="utf-8", newline="") as handle:
            texts = [row[2] for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
        for name in ("jglue_jnli_valid.jsonl", "jglue_jsts_valid.jsonl"):
            path = SHARED_DATA / name
            if path.is_file():
                with open(path, encoding="utf-8") as handle:
                    for line in handle:
                        row = json.loads(line)
                        pairs.append((row["sentence1"], row["sentence2"]))
        source = f"{SHARED_DATA}: jrte_rhr.tsv texts, JGLUE JNLI+JSTS valid sentence pairs"
    else:
        for name in ("train.csv", "validation.csv", "test.csv"):
            with open(REPO_ROOT / "data" / "quickstart" / name, encoding="utf-8", newline="") as handle:
                texts += [row["text"] for row in csv.DictReader(handle)]
        # The demo set is small: repeat it to reach 1,000+ texts (the word cache then helps the fast
        # path more than on real data; prefer the shared data for figures you publish).
        texts = (texts * (1 + 1200 // max(len(texts), 1)))[:1200]
        pairs = list(zip(texts[::2], texts[1::2]))
        source = "data/quickstart (repeated to 1,200 texts; ../shared/data not present)"
    return texts, pairs, source


def best_rate(function, count: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` calls."""
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        fastest = min(fastest, time.perf_counter() - started)
    return count / fastest


def in_batches(items: list, batch_size: int) -> list[list]:
    return [items[i: i + batch_size] for i in range(0, len(items), batch_size)]


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical CPUs"


def main(argv=None) -> None:
    """Run both tokenizers on the same texts and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=None, help="BertJapaneseTokenizer directory (default: train one on the texts)")
    parser.add_argument("--vocab-size", type=int, default=32768, help="vocabulary budget when training one (default 32768)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation length (default 128)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per call, as a server batch (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side; the best counts (default 3)")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from jbert.tokenization import FastBertJapaneseTokenizer, load_serving_tokenizer
    from jbert.core.normalize import NormalizationConfig, normalize_text
    from jbert.tokenization import train_japanese_wordpiece

    hf_logging.set_verbosity_error()
    raw_texts, raw_pairs, source = load_texts()
    config = NormalizationConfig()
    texts = [normalize_text(t, config) for t in raw_texts]
    pairs = [(normalize_text(a, config), normalize_text(b, config)) for a, b in raw_pairs]

    with tempfile.TemporaryDirectory(prefix="jbert-bench-tokenizer-") as work:
        if args.tokenizer:
            tokenizer_dir = Path(args.tokenizer)
            vocabulary = f"{tokenizer_dir}"
        else:
            tokenizer_dir = Path(work) / "tokenizer"
            train_japanese_wordpiece(texts + [t for pair in pairs for t in pair], args.vocab_size, tokenizer_dir)
            vocabulary = f"trained on the benchmark texts by train_japanese_wordpiece (budget {args.vocab_size})"
        reference = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        fast = load_serving_tokenizer(tokenizer_dir)
        if not isinstance(fast, FastBertJapaneseTokenizer):
            raise SystemExit(f"{tokenizer_dir} has no fast BertJapaneseTokenizer path (got {type(fast).__name__})")

        batches = in_batches(texts, args.batch_size)
        pair_batches = in_batches(pairs, args.batch_size)

        def run_reference():
            return [ids for batch in batches
                    for ids in reference(batch, truncation=True, max_length=args.max_length)["input_ids"]]

        def run_fast():
            return [e.input_ids for batch in batches for e in fast.encode_batch(batch, max_length=args.max_length)]

        def run_reference_pairs():
            return [ids for batch in pair_batches
                    for ids in reference([a for a, _ in batch], [b for _, b in batch],
                                         truncation=True, max_length=args.max_length)["input_ids"]]

        def run_fast_pairs():
            return [e.input_ids for batch in pair_batches
                    for e in fast.encode_batch([a for a, _ in batch], [b for _, b in batch], max_length=args.max_length)]

        def run_fast_cold():
            fast._wordpiece_cache.clear()  # as a freshly started server: no word seen yet
            return run_fast()

        identical = run_fast_cold() == run_reference()
        if pairs:
            identical = identical and run_fast_pairs() == run_reference_pairs()
        reference_rate = best_rate(run_reference, len(texts), args.repeats)
        fast_rate = best_rate(run_fast, len(texts), args.repeats)
        fast_cold = best_rate(run_fast_cold, len(texts), args.repeats)
        result = {
            "benchmark": "tokenization alone (no model)",
            "data": source,
            "texts": len(texts),
            "vocabulary": vocabulary,
            "vocab_entries": len(fast.vocab),
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "machine": cpu_description(),
            "ids_identical": identical,
            "reference_texts_per_s": round(reference_rate, 1),
            "fast_texts_per_s": round(fast_rate, 1),
            "fast_cold_cache_texts_per_s": round(fast_cold, 1),
            "speedup": round(fast_rate / reference_rate, 2),
            "speedup_cold_cache": round(fast_cold / reference_rate, 2),
        }
        if pairs:
            reference_pairs = best_rate(run_reference_pairs, len(pairs), args.repeats)
            fast_pairs = best_rate(run_fast_pairs, len(pairs), args.repeats)
            result.update({
                "pairs": len(pairs),
                "reference_pairs_per_s": round(reference_pairs, 1),
                "fast_pairs_per_s": round(fast_pairs, 1),
                "speedup_pairs": round(fast_pairs / reference_pairs, 2),
            })
        result["target_met"] = identical and result["speedup"] >= 3.0
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "tokenizer", result, argv)


if __name__ == "__main__":
    main()
