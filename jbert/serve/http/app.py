"""HTTP service: FastAPI on uvicorn in front of the micro-batcher (HTTP only, no ONNX in here).

Endpoints, in the spirit of text-embeddings-inference:
    POST /predict   {"inputs": str | [str] | [[str, str]], "top_k": int?, "truncate": bool?}
                    -> one result object for a string, a list of them for a list
    GET  /health    200 while serving, 503 while draining for shutdown
    GET  /info      the model being served and the limits in force
    GET  /metrics   Prometheus text: requests, latency histogram, batch sizes, queue depth,
                    tokenization and inference time

Every non-2xx answer has a JSON body {"error": ..., "error_type": ...}: malformed JSON 400;
a body outside the request schema (wrong types, unknown fields, empty or too many inputs, a too
long or blank text) 422; too long a body, or a too long text with "truncate": false, 413; queue
full or draining 503 with Retry-After; no or a wrong bearer token 401 (with --api-key-file).
A 500 means a bug in jbert. /openapi.json lists all of it, and a fuzzer checks that it is true.

Where a change belongs: routes and the CLI options here; request parsing and limits in
http_request; the OpenAPI document and response models in http_schema; Prometheus metrics in
http_metrics; the bearer token and the bind warning in http_security; SIGTERM draining in
http_shutdown.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jbert.core.errors import UserError, format_problems
from jbert.serve.batching import BatcherConfig, MicroBatcher, QueueFullError, ShuttingDownError
from jbert.serve.http_metrics import MetricsMiddleware, ServiceMetrics
from jbert.serve.http_request import (
    ClientError, ServeLimits, error_response, parse_predict_body, read_body,
)
from jbert.serve.http_schema import PROMETHEUS_CONTENT_TYPE, blank_characters, install_openapi, not_blank_pattern
from jbert.serve.http_security import BearerAuthMiddleware, bind_warning, is_loopback, load_api_key
from jbert.serve.http_shutdown import DrainGate, DrainingServer
from jbert.serve.runtime import InputError

logger = logging.getLogger("jbert.serve.http")

# Names users import from here (and from the old `jbert.serving`).
__all__ = ["ServeLimits", "ServeOptions", "create_app", "is_loopback", "serve"]


def create_app(
    model: Any,
    batcher_config: BatcherConfig | None = None,
    limits: ServeLimits | None = None,
    shutdown_timeout_s: float = 30.0,
    api_key: str | None = None,
) -> FastAPI:
    """The FastAPI app serving `model` (a `jbert.serve.runtime.OnnxClassifier`) through a MicroBatcher.

    The batcher starts with the app's lifespan. `app.state.drain()` refuses new work, answers
    every accepted request and stops the batcher (what SIGTERM runs, see http_shutdown). With
    `api_key`, every route but /health requires `Authorization: Bearer <api_key>`.
    """
    limits = limits or ServeLimits()
    limits.validate()
    metrics = ServiceMetrics()
    batcher = MicroBatcher(model, batcher_config, observer=metrics)
    gate = DrainGate()
    info = dict(model.info())
    num_labels = max(1, len(info.get("labels") or []))
    is_pair = bool(info.get("is_pair"))

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

    install_openapi(app, limits, is_pair, auth=api_key is not None, text_pattern=text_pattern)

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

    @app.post("/predict")
    async def predict(request: Request):
        """Classify one text, a list of texts, or a list of [text, text_pair]."""
        if not gate.admit():
            raise ClientError(503, "draining", "the server is shutting down; send this request to another replica",
                              {"Retry-After": "5", "Connection": "close"})
        try:
            return await _predict(request)
        finally:
            gate.release()

    async def _predict(request: Request) -> JSONResponse:
        body = await read_body(request, limits.max_body_bytes)
        parsed = parse_predict_body(body, is_pair, num_labels, limits)
        try:
            results = await batcher.predict(parsed.texts, parsed.text_pairs, parsed.top_k, parsed.truncate)
        except QueueFullError as err:
            raise ClientError(503, "overloaded", str(err), {"Retry-After": str(err.retry_after_s)}) from None
        except ShuttingDownError as err:  # only when a drain ran out of time
            raise ClientError(503, "draining", str(err), {"Retry-After": "5"}) from None
        except InputError as err:
            message = str(err)
            if err.index is not None and message.startswith(f"input {err.index}"):
                message = f"inputs[{err.index}]" + message[len(f"input {err.index}"):]
            if err.kind == "too_long":
                raise ClientError(413, "payload_too_large", message) from None
            raise ClientError(422, "validation", message) from None
        return JSONResponse(results[0] if parsed.single else results)

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


def _option(default, help_text: str, **extra):
    """A dataclass field with its one-line help (the CLI flags come from these)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ServeOptions:
    """Every option of `serve_onnx.py http`: the single source for `serve` and the CLI flags."""

    export_dir: str = _option(None, "Export directory written by export.py.", positional=True)
    host: str = _option("127.0.0.1", "Address to listen on. The default accepts local clients only; any other address prints a warning (and without --api-key-file, anyone who reaches it can use it).")
    port: int = _option(8000, "TCP port (0: any free port).")
    api_key_file: Optional[str] = _option(None, "File holding a bearer token (one line, at least 16 characters); when given, every route but /health requires 'Authorization: Bearer <token>'.")
    model: str = _option("default", "Which ONNX file of the export to serve: default, fp32, optimized or int8.")
    num_threads: Optional[int] = _option(None, "onnxruntime threads (default: one per physical core).")
    max_batch_tokens: int = _option(BatcherConfig.max_batch_tokens, "Padded tokens (texts x longest text) per model call.")
    max_batch_texts: int = _option(BatcherConfig.max_batch_texts, "Texts per model call.")
    max_wait_ms: float = _option(BatcherConfig.max_wait_ms, "How long a request may wait for others to share its model call.")
    max_queue_texts: int = _option(BatcherConfig.max_queue_texts, "Texts waiting or running; beyond this, requests get 503 with Retry-After.")
    max_client_batch_size: int = _option(ServeLimits.max_client_batch_size, "Inputs per request; more gets 422.")
    max_body_bytes: int = _option(ServeLimits.max_body_bytes, "Request body size in bytes; more gets 413.")
    max_text_chars: int = _option(ServeLimits.max_text_chars, "Characters per text; more gets 422.")
    ort_spinning: bool = _option(False, "Let onnxruntime's idle threads busy-wait between model calls (off: on small machines they would take CPU from tokenization and HTTP).")
    shutdown_timeout_s: float = _option(30.0, "On SIGTERM/SIGINT, how long to drain: /health turns 503, new requests get 503, accepted ones are answered.")
    log_level: str = _option("info", "uvicorn log level: critical, error, warning, info or debug (debug adds an access log).")

    def batcher_config(self) -> BatcherConfig:
        """The micro-batcher limits of these options."""
        return BatcherConfig(
            max_batch_tokens=self.max_batch_tokens, max_batch_texts=self.max_batch_texts,
            max_wait_ms=self.max_wait_ms, max_queue_texts=self.max_queue_texts,
        )

    def limits(self) -> ServeLimits:
        """The per-request limits of these options."""
        return ServeLimits(max_client_batch_size=self.max_client_batch_size, max_body_bytes=self.max_body_bytes,
                           max_text_chars=self.max_text_chars)

    def validate(self) -> None:
        """Check every option; one UserError lists all problems."""
        problems = []
        if not self.export_dir:
            problems.append("EXPORT_DIR is required")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be between 0 and 65535, got {self.port}")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"--num-threads must be at least 1, got {self.num_threads}")
        if self.shutdown_timeout_s < 0:
            problems.append(f"--shutdown-timeout-s must not be negative, got {self.shutdown_timeout_s}")
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            problems.append(f"--log-level {self.log_level!r} is not one of critical, error, warning, info, debug")
        checks = [self.batcher_config().validate, self.limits().validate]
        if self.api_key_file is not None:
            checks.append(lambda: load_api_key(self.api_key_file))
        for check in checks:
            try:
                check()
            except UserError as err:
                problems.append(str(err))
        if problems:
            raise UserError(format_problems("cannot serve", problems))


def serve(options: ServeOptions) -> None:
    """Load an export directory and serve it with uvicorn until SIGTERM/SIGINT, then drain and exit."""
    import uvicorn

    from jbert.serve.runtime import OnnxClassifier

    options.validate()
    api_key = None
    if options.api_key_file is not None:
        api_key, key_warnings = load_api_key(options.api_key_file)
        for warning in key_warnings:
            logger.warning(warning)
    warning = bind_warning(options.host, api_key is not None)
    if warning:
        logger.warning(warning)
    classifier = OnnxClassifier.from_export_dir(
        options.export_dir, model=options.model, num_threads=options.num_threads, allow_spinning=options.ort_spinning
    )
    app = create_app(classifier, options.batcher_config(), options.limits(), options.shutdown_timeout_s, api_key)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level=options.log_level,
        timeout_graceful_shutdown=int(math.ceil(options.shutdown_timeout_s)), access_log=options.log_level == "debug",
    )
    DrainingServer(config, drain=app.state.drain).run()
