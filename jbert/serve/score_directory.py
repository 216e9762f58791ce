"""Scoring into a directory of shards, by the local engine or by Ray: choose the files, then the engine.

Both engines write the same shards and manifest (`jbert.serve.score_shards`), so a directory
scored by one reads like a directory scored by the other.
"""

from __future__ import annotations

from jbert.core.errors import UserError
from jbert.serve.score_shards import score_files_locally
from jbert.serve.score_sources import check_formats, expand_inputs
from jbert.serve.score_tables import SHARD_FORMATS


def score_into_directory(options, classifier=None) -> dict:
    """Score every file that `options.input` names into the directory `options.output`; returns the manifest.

    `options`: a `jbert.serve.scoring.ScoreOptions`. `classifier`: a loaded runtime for the local
    engine (else loaded from `options.export_dir`); the Ray engine's workers load their own.
    """
    output_format = options.output_format or "parquet"
    if output_format not in SHARD_FORMATS:
        raise UserError(
            f"an output directory holds {' or '.join(SHARD_FORMATS)} shards, not {output_format}; "
            "for a CSV/TSV file score one input into an output file such as scored.csv"
        )
    files = expand_inputs(options.input)
    check_formats(files, options.input_format)
    if options.engine == "ray":
        from jbert.serve.ray_engine import score_files_with_ray

        return score_files_with_ray(files, options, output_format)
    if classifier is None:
        from jbert.serve.runtime import OnnxClassifier

        classifier = OnnxClassifier.from_export_dir(options.export_dir, model=options.model, num_threads=options.num_threads)
    settings = classifier.settings
    text_column = options.text_column or settings.text_column
    pair_column = (options.text_pair_column or settings.text_pair_column) if classifier.is_pair else None
    if options.text_pair_column and not classifier.is_pair:
        raise UserError("--text-pair-column was given but this model classifies single texts")
    return score_files_locally(files, options, classifier, text_column, pair_column, output_format)
