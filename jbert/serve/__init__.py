"""Serving stage: an ONNX export directory -> scores, with onnxruntime and no torch, in three rooms.

    runtime   OnnxClassifier: normalise, tokenize, pad and bucket by length, run onnxruntime,
              post-process (jbert.core.export_dir reads the export directory once)
    scoring   batch scoring of files: local or fsspec inputs, one row out per row in, output
              files or shard directories, resume, Ray Data
    http      the FastAPI service: routes, options, request limits, OpenAPI, bearer token,
              Prometheus metrics, SIGTERM drain, and the micro-batcher in front of the runtime
    cli       `serve_onnx.py` / `jbert-serve`: the `score` and `http` subcommands

Rooms do not know each other's insides: http and scoring both run the runtime and never import
each other, the runtime imports neither, and only the cli sees both. Nothing here imports torch
or transformers (a test keeps it so); only `jbert.core` and `jbert.tokenization` are used from the
rest of the package.
"""
