"""Serving stage: an ONNX export directory -> scores, with onnxruntime and no torch.

    runtime   OnnxClassifier: composes encoding (normalise, tokenize, pad, length buckets), session
              (onnxruntime options, threads, loading) and jbert.core.postprocessing
    scoring   batch scoring: options and the single-file scorer (resumable); beside it score_input
              (tolerant readers: CSV/TSV/JSONL/Parquet, local or fsspec URLs), score_rows (one scored
              row per record), score_output (JSONL/CSV/TSV writers), score_sources (globs,
              directories), score_tables (Arrow batches, shards), score_shards (shard directory +
              manifest, local engine), score_directory (engine choice) and ray_engine (Ray Data)
    batching  bounded queue + micro-batcher (token budget, max wait) between HTTP and the runtime
    http      the FastAPI service: routes and options (/predict, /health, /info, /metrics); beside it
              http_request (parsing, limits), http_schema (OpenAPI), http_metrics (Prometheus),
              http_security (bearer token, bind warning), http_shutdown (SIGTERM drain)

Layers do not know each other's insides: the runtime has no HTTP in it, the HTTP layer no ONNX.
Nothing here imports torch or transformers (a test keeps it so); only `jbert.core` and
`jbert.tokenization` are used from the rest of the package.
"""
