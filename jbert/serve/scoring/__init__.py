"""The scoring room: files in, one scored row per input row out, in this process or on Ray Data.

    options     ScoreOptions: every flag of `serve_onnx.py score`, checked together; ScoreSummary
    run         score_file: one output file (streamed in chunks, resumable) or a shard directory
    inputs      which files (globs, directories, fsspec URLs) and opening one (CSV/TSV/JSONL/Parquet, stdin)
    records     Record, and text files read line by line into records, a bad line kept with its error
    rows        records -> scored rows: the one place that decides what a scored row holds
    outputs     the prediction columns and the JSONL/CSV/TSV writer
    tables      Arrow batches: a file's records as tables, scored tables, one shard file each
    shards      a shard directory and its manifest, filled in this process (local engine)
    resume      what lets an interrupted run continue: partial files and their fingerprints
    ray_engine  the same tables scored by an actor pool on Ray Data (local or a cluster)

It runs `jbert.serve.runtime` and never imports `jbert.serve.http`.
"""
