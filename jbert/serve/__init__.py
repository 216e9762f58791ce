"""Serving stage: an ONNX export directory -> scores, with onnxruntime and no torch.

    runtime   OnnxClassifier: tokenize, bucket by length, run the ONNX session, post-process
    scoring   batch scoring of files (CSV/TSV/JSONL) into scored files
    batching  bounded queue + micro-batcher (token budget, max wait) between HTTP and the runtime
    http      the FastAPI service: routes and options (/predict, /health, /info, /metrics); beside it
              http_request (parsing, limits), http_schema (OpenAPI), http_metrics (Prometheus),
              http_security (bearer token, bind warning), http_shutdown (SIGTERM drain)

Layers do not know each other's insides: the runtime has no HTTP in it, the HTTP layer no ONNX.
Nothing here imports torch or transformers (a test keeps it so); only `jbert.core` and
`jbert.tokenization` are used from the rest of the package.
"""
