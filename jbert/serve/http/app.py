"""HTTP service: FastAPI on uvicorn in front of the micro-batcher (HTTP only, no ONNX in here).

Endpoints:
    POST /predict     text-embeddings-inference's /predict: {"inputs": "text" | ["text", "pair"] |
                      [["text"], ...], "truncate"?, "truncation_direction"?, "raw_scores"?} -> per input
                      a list of {"label", "score"}, every label, best first (see `tei`)
    POST /            the Hugging Face Inference API's text-classification body, as
                      huggingface_hub.InferenceClient(url).text_classification sends it (see `tei`)
    POST /v1/predict  jbert's richer answer: {"inputs": str | [str] | [[str, str]], "top_k": int?,
                      "truncate": bool?} -> one result object for a string, a list of them for a list
    GET  /health      200 while serving, 503 while draining for shutdown
    GET  /info        the model being served and the limits in force
    GET  /metrics     Prometheus text: requests, latency histogram, batch sizes, queue depth,
                      tokenization and inference time

Every non-2xx answer has a JSON body {"error": ..., "error_type": ...}. A POST without
Content-Type: application/json is 415; a body that is not JSON 400; too long a body 413. On
/v1/predict: a body outside its schema 422, a too long text with "truncate": false 413, queue
full or draining 503 with Retry-After. On the TEI routes the statuses are TEI's: too many inputs
413, outside the schema or not tokenizable 422, the model failed 424, queue full 429, draining
503. No or a wrong bearer token 401 (with --api-key-file). A 500 means a bug in jbert.
/openapi.json lists all of it, and a fuzzer checks that it is true.

Where a change belongs: routes and `serve` here; the options in `options`; request parsing and
limits in `request` (TEI bodies and answers in `tei`); the OpenAPI document and response models
in `schema`; Prometheus metrics in `metrics`; the bearer token and the bind warning in
`security`; SIGTERM draining in `shutdown`; connection cap and read deadline in `protocol`; the
bounded queue and micro-batcher in `microbatch`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jbert.serve.http.metrics import MetricsMiddleware, ServiceMetrics
from jbert.serve.http.microbatch import BatcherConfig, MicroBatcher, QueueFullError, ShuttingDownError
from jbert.serve.http.options import ServeOptions
from jbert.serve.http.protocol import guarded_protocol
from jbert.serve.http.request import ClientError, ServeLimits, error_response, parse_predict_body, read_body
from jbert.serve.http.schema import PROMETHEUS_CONTENT_TYPE, blank_characters, install_openapi, not_blank_pattern
from jbert.serve.http.security import BearerAuthMiddleware, bind_warning
from jbert.serve.http.shutdown import DrainGate, DrainingServer
from jbert.serve.http.tei import (ModelOutputError, label_scores_format, parse_inference_api_body, parse_tei_body,
                                  truncation_side)
from jbert.serve.runtime.batch_inputs import InputError

logger = logging.getLogger("jbert.serve.http")


def create_app(
    model: Any,
    batcher_config: BatcherConfig | None = None,
    limits: ServeLimits | None = None,
    shutdown_timeout_s: float = 30.0,
    api_key: str | None = None,
) -> FastAPI:
    """The FastAPI app serving `model` (a `jbert.serve.runtime.OnnxClassifier`) through a MicroBatcher.

    The batcher starts with the app's lifespan. `app.state.drain()` refuses new work, answers
    every accepted request and stops the batcher (what SIGTERM runs, see `shutdown`). With
    `api_key`, every route but /health requires `Authorization: Bearer <api_key>`.
    """
    limits = limits or ServeLimits()  # BatcherConfig and ServeLimits check their values when made
    metrics = ServiceMetrics()
    batcher = MicroBatcher(model, batcher_config, observer=metrics)
    gate = DrainGate()
    info = dict(model.info())
    num_labels = max(1, len(info.get("labels") or []))
    is_pair = bool(info.get("is_pair"))
    side = truncation_side(model)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        logger.info("serving %s", info)
        yield
        await batcher.stop(timeout_s=shutdown_timeout_s)

    app = FastAPI(
        title="jbert text classification",
        description="Japanese BERT classifier served with onnxruntime (no torch).",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.gate = gate
    app.state.drain = functools.partial(gate.drain, batcher.stop, shutdown_timeout_s)

    def text_pattern() -> str | None:
        """The schema's "not blank" pattern, from the runtime's own clean-up (so no second copy of it)."""
        if not hasattr(model, "input_problem"):
            return None
        other = "犬" if is_pair else None
        return not_blank_pattern(blank_characters(lambda char: model.input_problem(char, other) is None))

    install_openapi(app, limits, is_pair, auth=api_key is not None, text_pattern=text_pattern, side=side)

    # Plain ASGI wrappers rather than @app.middleware("http"): Starlette's BaseHTTPMiddleware
    # adds a task group and memory streams to every request, which costs throughput on few cores.
    # Added last = outermost: metrics also count the 401s.
    if api_key is not None:
        app.add_middleware(BearerAuthMiddleware, api_key=api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ClientError)
    async def client_error(request: Request, err: ClientError):
        return error_response(err.status, err.error_type, err.message, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, error_type, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return error_response(422, "validation", str(err.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        logger.exception("internal error on %s", request.url.path)
        return error_response(500, "internal", "internal server error (a bug in jbert; see the server log)")

    def admitted(handler):
        """Run `handler(request)` unless draining (then 503), counted by the drain gate."""
        @functools.wraps(handler)
        async def route(request: Request):
            if not gate.admit():
                raise ClientError(503, "draining", "the server is shutting down; send this request to another replica",
                                  {"Retry-After": "5", "Connection": "close"})
            try:
                return await handler(request)
            finally:
                gate.release()
        return route

    async def classify(texts, text_pairs, truncate, tei: bool, top_k=None, format=None, truncation_side=None):
        """The batcher's answer, its refusals turned into ClientErrors (TEI's statuses when `tei`)."""
        try:
            return await batcher.predict(texts, text_pairs, top_k, truncate, format=format,
                                         truncation_side=truncation_side)
        except QueueFullError as err:
            raise ClientError(429 if tei else 503, "overloaded", str(err), {"Retry-After": str(err.retry_after_s)}) from None
        except ShuttingDownError as err:  # only when a drain ran out of time
            raise ClientError(503, "draining", str(err), {"Retry-After": "5"}) from None
        except InputError as err:
            message = str(err)
            if err.index is not None and message.startswith(f"input {err.index}"):
                message = f"inputs[{err.index}]" + message[len(f"input {err.index}"):]
            if err.kind == "too_long" and not tei:
                raise ClientError(413, "payload_too_large", message) from None
            raise ClientError(422, "validation", message) from None
        except Exception as err:
            if not tei:
                raise
            logger.exception("model call failed")
            message = str(err) if isinstance(err, ModelOutputError) else "the model failed on this batch (see the server log)"
            raise ClientError(424, "backend", message) from None

    @app.post("/v1/predict")
    @admitted
    async def predict_v1(request: Request):
        """Classify one text, a list of texts, or a list of [text, text_pair]: jbert's result objects."""
        parsed = parse_predict_body(await read_body(request, limits.max_body_bytes), is_pair, num_labels, limits)
        results = await classify(parsed.texts, parsed.text_pairs, parsed.truncate, tei=False, top_k=parsed.top_k)
        return JSONResponse(results[0] if parsed.single else results)

    @app.post("/predict")
    @admitted
    async def predict_tei(request: Request):
        """text-embeddings-inference's /predict: every label's score per input, best first."""
        parsed = parse_tei_body(await read_body(request, limits.max_body_bytes), is_pair, limits)
        results = await classify(parsed.texts, parsed.text_pairs, parsed.truncate, tei=True,
                                 format=label_scores_format(model, parsed), truncation_side=parsed.direction)
        return JSONResponse(results[0] if parsed.single else results)

    @app.post("/")
    @admitted
    async def predict_inference_api(request: Request):
        """The Hugging Face Inference API's text classification (huggingface_hub.InferenceClient)."""
        parsed = parse_inference_api_body(await read_body(request, limits.max_body_bytes), is_pair, limits)
        results = await classify(parsed.texts, parsed.text_pairs, parsed.truncate, tei=True,
                                 format=label_scores_format(model, parsed))
        return JSONResponse(results)

    @app.get("/health")
    async def health():
        """200 while requests are taken; 503 while draining for shutdown (or if the batcher stopped)."""
        if gate.draining or not batcher.running:
            return error_response(503, "draining", "draining for shutdown: not taking new requests", {"Retry-After": "5"})
        return {"status": "ok", "queue_texts": batcher.pending_texts}

    @app.get("/info")
    async def model_info():
        """The model served and the limits in force."""
        return {
            **info,
            "max_client_batch_size": limits.max_client_batch_size,
            "max_body_bytes": limits.max_body_bytes,
            "max_text_chars": limits.max_text_chars,
            "max_batch_tokens": batcher.config.max_batch_tokens,
            "max_wait_ms": batcher.config.max_wait_ms,
            "max_queue_texts": batcher.config.max_queue_texts,
            "auth": "bearer" if api_key is not None else "none",
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        """Prometheus text exposition."""
        return PlainTextResponse(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return app


def serve(options: ServeOptions) -> None:
    """Load an export directory and serve it with uvicorn until SIGTERM/SIGINT, then drain and exit."""
    import uvicorn

    from jbert.serve.runtime.classifier import OnnxClassifier

    setup = options.validate()
    for warning in setup.key_warnings:
        logger.warning(warning)
    warning = bind_warning(options.host, setup.api_key is not None)
    if warning:
        logger.warning(warning)
    classifier = OnnxClassifier.from_export_dir(
        options.export_dir, model=options.model, num_threads=options.num_threads, allow_spinning=options.ort_spinning
    )
    app = create_app(classifier, setup.batcher_config, setup.limits, options.shutdown_timeout_s, setup.api_key)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level=options.log_level,
        http=guarded_protocol(setup.connection_limits), timeout_keep_alive=options.keep_alive_timeout_s,
        timeout_graceful_shutdown=int(math.ceil(options.shutdown_timeout_s)), access_log=options.log_level == "debug",
    )
    DrainingServer(config, drain=app.state.drain, budget_s=options.shutdown_timeout_s).run()
