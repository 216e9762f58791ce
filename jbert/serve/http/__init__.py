"""The HTTP room: a FastAPI service in front of the runtime (no ONNX in here).

    app         create_app (routes /predict, /health, /info, /metrics) and serve (uvicorn until SIGTERM)
    options     ServeOptions: every flag of `serve_onnx.py http`, checked once
    microbatch  bounded queue + micro-batcher (token budget, max wait) between the routes and the runtime
    request     reading and validating a /predict body against the limits
    schema      the OpenAPI document the fuzzer holds the service to
    security    bearer token, loopback default and the warning when exposed
    metrics     Prometheus counters and histograms
    shutdown    SIGTERM draining

It runs `jbert.serve.runtime` and never imports `jbert.serve.scoring`.
"""
