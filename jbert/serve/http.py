"""HTTP service: FastAPI on uvicorn in front of the micro-batcher (HTTP only, no ONNX in here).

Endpoints, in the spirit of text-embeddings-inference:
    POST /predict   {"inputs": str | [str] | [[str, str]], "top_k": int?, "truncate": bool?}
                    -> one result object for a string, a list of them for a list
    GET  /health    200 while serving, 503 while shutting down
    GET  /info      the model being served and the limits in force
    GET  /metrics   Prometheus text: requests, latency histogram, batch sizes, queue depth,
                    tokenization and inference time

Every client mistake gets a 4xx JSON body {"error": ..., "error_type": ...}: malformed JSON 400;
wrong types, empty inputs, unknown fields 422; too many inputs, too long a body, or a too long
text with "truncate": false 413; queue full 503 with Retry-After. A 500 means a bug in jbert.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jbert.serve.batching import BatcherConfig, MicroBatcher, QueueFullError, ShuttingDownError
from jbert.core.errors import UserError, format_problems
from jbert.serve.runtime import InputError

logger = logging.getLogger("jbert.serve.http")

PREDICT_FIELDS = ("inputs", "top_k", "truncate")
KNOWN_PATHS = ("/predict", "/health", "/info", "/metrics")


@dataclass
class ServeLimits:
    """What one request may ask for (beyond these: 413)."""

    max_client_batch_size: int = 64  # inputs per request
    max_body_bytes: int = 2 * 1024 * 1024  # request body size
    max_top_k: int | None = None  # None: as many as the model has labels

    def validate(self) -> None:
        """Raise UserError for limits that make no sense."""
        problems = []
        if self.max_client_batch_size < 1:
            problems.append(f"max_client_batch_size must be at least 1, got {self.max_client_batch_size}")
        if self.max_body_bytes < 64:
            problems.append(f"max_body_bytes must be at least 64, got {self.max_body_bytes}")
        if problems:
            raise UserError("invalid request limits: " + "; ".join(problems))


class ClientError(Exception):
    """A client's mistake, answered with `status` and a JSON error body."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------------- metrics
class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count) formatted by hand."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        """`buckets`: upper bounds, ascending; +Inf is added."""
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self.series: dict[tuple, list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = tuple(sorted(labels.items()))
        row = self.series.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                row[index] += 1
        row[-2] += value
        row[-1] += 1

    def render(self) -> list[str]:
        """Exposition-format lines."""
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for key, row in sorted(self.series.items()):
            base = ",".join(f'{k}="{v}"' for k, v in key)
            sep = "," if base else ""
            for bound, count in zip(self.buckets, row):
                lines.append(f'{self.name}_bucket{{{base}{sep}le="{_format_number(bound)}"}} {count}')
            lines.append(f'{self.name}_bucket{{{base}{sep}le="+Inf"}} {row[-1]}')
            suffix = f"{{{base}}}" if base else ""
            lines.append(f"{self.name}_sum{suffix} {_format_number(row[-2])}")
            lines.append(f"{self.name}_count{suffix} {row[-1]}")
        return lines


def _format_number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()):
        return str(int(value))
    return repr(float(value))


class ServiceMetrics:
    """Everything /metrics reports; updated on the event loop thread only, so no locks."""

    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

    def __init__(self):
        """Empty counters."""
        self.requests: dict[tuple[str, int], int] = {}
        self.texts_total = 0
        self.queue_depth_texts = 0
        self.request_latency = Histogram(
            "jbert_request_duration_seconds", "HTTP request latency by path.", self.LATENCY_BUCKETS
        )
        self.batch_size = Histogram("jbert_batch_size", "Texts per model call (micro-batch).", self.SIZE_BUCKETS)
        self.batch_tokens = Histogram(
            "jbert_batch_padded_tokens", "Padded tokens (texts x longest) per model call.",
            (64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
        )
        self.batch_requests = Histogram("jbert_batch_requests", "Requests merged into one model call.", self.SIZE_BUCKETS)
        self.tokenization_time = Histogram(
            "jbert_tokenization_duration_seconds", "Text clean-up and tokenization time per request.", self.LATENCY_BUCKETS
        )
        self.inference_time = Histogram(
            "jbert_inference_duration_seconds", "onnxruntime time per model call.", self.LATENCY_BUCKETS
        )

    # --- BatchObserver
    def tokenized(self, texts: int, seconds: float) -> None:
        """Batcher hook: one request tokenized."""
        self.tokenization_time.observe(seconds)

    def batch_done(self, texts: int, padded_tokens: int, requests: int, seconds: float) -> None:
        """Batcher hook: one model call finished."""
        self.texts_total += texts
        self.batch_size.observe(texts)
        self.batch_tokens.observe(padded_tokens)
        self.batch_requests.observe(requests)
        self.inference_time.observe(seconds)

    def queue_depth(self, texts: int) -> None:
        """Batcher hook: texts accepted and not answered."""
        self.queue_depth_texts = texts

    # --- HTTP
    def request_done(self, path: str, status: int, seconds: float) -> None:
        """One HTTP request answered."""
        path = path if path in KNOWN_PATHS else "other"  # unknown paths must not blow up the series count
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.request_latency.observe(seconds, path=path)

    def render(self) -> str:
        """The Prometheus text exposition of all metrics."""
        lines = ["# HELP jbert_requests_total HTTP requests by path and status code.", "# TYPE jbert_requests_total counter"]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(f'jbert_requests_total{{path="{path}",status="{status}"}} {count}')
        lines += [
            "# HELP jbert_texts_total Texts classified.",
            "# TYPE jbert_texts_total counter",
            f"jbert_texts_total {self.texts_total}",
            "# HELP jbert_queue_depth_texts Texts accepted and not yet answered.",
            "# TYPE jbert_queue_depth_texts gauge",
            f"jbert_queue_depth_texts {self.queue_depth_texts}",
        ]
        for histogram in (
            self.request_latency, self.batch_size, self.batch_tokens, self.batch_requests,
            self.tokenization_time, self.inference_time,
        ):
            lines += histogram.render()
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- request parsing
async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refusing (413) more than `max_body_bytes` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ClientError(400, "malformed_request", "Content-Length is not a number") from None
        if declared_bytes > max_body_bytes:
            raise ClientError(413, "payload_too_large", f"body of {declared_bytes} bytes exceeds the limit of {max_body_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:  # chunked uploads have no Content-Length to check up front
            raise ClientError(413, "payload_too_large", f"body exceeds the limit of {max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class PredictRequest:
    """A validated /predict body."""

    texts: list[str]
    text_pairs: list[str] | None
    top_k: int | None
    truncate: bool
    single: bool  # "inputs" was one string (or one pair): answer with one object, not a list


def parse_predict_body(body: bytes, is_pair: bool, num_labels: int, limits: ServeLimits) -> PredictRequest:
    """Validate a /predict body; raise ClientError with the status and a message saying what to fix."""
    if not body.strip():
        raise ClientError(400, "malformed_json", 'empty body; send JSON like {"inputs": ["テキスト"]}')
    try:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from the first bytes.
        payload = json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ClientError(400, "malformed_json", "body is not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise ClientError(400, "malformed_json", f"body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ClientError(422, "validation", f'body must be a JSON object like {{"inputs": [...]}}, got {_json_type(payload)}')
    unknown = sorted(set(payload) - set(PREDICT_FIELDS))
    if unknown:
        raise ClientError(422, "validation", f"unknown fields {unknown}; accepted: {list(PREDICT_FIELDS)}")
    if "inputs" not in payload:
        raise ClientError(422, "validation", '"inputs" is required: a string, a list of strings, or a list of [text, text_pair]')

    top_k = payload.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise ClientError(422, "validation", f'"top_k" must be a positive integer or null, got {_json_type(top_k)}')
        if top_k < 1:
            raise ClientError(422, "validation", f'"top_k" must be at least 1, got {top_k}')
        top_k = min(top_k, limits.max_top_k or num_labels, num_labels)
    truncate = payload.get("truncate", True)
    if truncate is None:
        truncate = True
    if not isinstance(truncate, bool):
        raise ClientError(422, "validation", f'"truncate" must be true or false, got {_json_type(truncate)}')

    inputs = payload["inputs"]
    single = isinstance(inputs, str) or (is_pair and _is_pair(inputs))
    items = [inputs] if single else inputs
    if not isinstance(items, list):
        raise ClientError(422, "validation", f'"inputs" must be a string or a list, got {_json_type(inputs)}')
    if not items:
        raise ClientError(422, "validation", '"inputs" is empty; send at least one text')
    if len(items) > limits.max_client_batch_size:
        raise ClientError(
            413, "payload_too_large",
            f'"inputs" has {len(items)} items; at most {limits.max_client_batch_size} per request: split it into several requests',
        )
    texts, pairs = [], [] if is_pair else None
    for index, item in enumerate(items):
        if is_pair:
            if not _is_pair(item):
                raise ClientError(
                    422, "validation",
                    f"inputs[{index}]: this model classifies sentence pairs; send [text, text_pair] (two strings), got {_json_type(item)}",
                )
            texts.append(item[0])
            pairs.append(item[1])
        else:
            if not isinstance(item, str):
                hint = " (this model classifies single texts, not pairs)" if _is_pair(item) else ""
                raise ClientError(422, "validation", f"inputs[{index}] must be a string, got {_json_type(item)}{hint}")
            texts.append(item)
    return PredictRequest(texts, pairs, top_k, truncate, single)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _error_response(status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


# ---------------------------------------------------------------------- the app
class _MetricsMiddleware:
    """ASGI middleware that records each HTTP request's path, status and latency."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before starting a response

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.request_done(scope["path"], status, time.perf_counter() - started)


def create_app(
    model: Any,
    batcher_config: BatcherConfig | None = None,
    limits: ServeLimits | None = None,
    shutdown_timeout_s: float = 30.0,
) -> FastAPI:
    """The FastAPI app serving `model` (a `jbert.serve.runtime.OnnxClassifier`) through a MicroBatcher.

    The batcher starts with the app's lifespan and, on shutdown, finishes every accepted request
    before the process exits.
    """
    limits = limits or ServeLimits()
    limits.validate()
    metrics = ServiceMetrics()
    batcher = MicroBatcher(model, batcher_config, observer=metrics)
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

    # A plain ASGI wrapper rather than @app.middleware("http"): Starlette's BaseHTTPMiddleware
    # adds a task group and memory streams to every request, which costs throughput on few cores.
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ClientError)
    async def client_error(request: Request, err: ClientError):
        return _error_response(err.status, err.error_type, err.message, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return _error_response(err.status_code, error_type, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return _error_response(422, "validation", str(err.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        logger.exception("internal error on %s", request.url.path)
        return _error_response(500, "internal", "internal server error (a bug in jbert; see the server log)")

    predict_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,
                "properties": {
                    "inputs": {"oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}},
                        {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}},
                    ]},
                    "top_k": {"type": "integer", "minimum": 1, "nullable": True},
                    "truncate": {"type": "boolean", "default": True},
                },
            }}},
        }
    }

    @app.post("/predict", openapi_extra=predict_schema)
    async def predict(request: Request):
        """Classify one text, a list of texts, or a list of [text, text_pair]."""
        body = await read_body(request, limits.max_body_bytes)
        parsed = parse_predict_body(body, is_pair, num_labels, limits)
        try:
            results = await batcher.predict(parsed.texts, parsed.text_pairs, parsed.top_k, parsed.truncate)
        except QueueFullError as err:
            raise ClientError(503, "overloaded", str(err), {"Retry-After": str(err.retry_after_s)}) from None
        except ShuttingDownError as err:
            raise ClientError(503, "unavailable", str(err), {"Retry-After": "5"}) from None
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
        """200 while the model is being served; 503 while shutting down."""
        if not batcher.running:
            return _error_response(503, "unavailable", "shutting down")
        return {"status": "ok", "queue_texts": batcher.pending_texts}

    @app.get("/info")
    async def model_info():
        """The model served and the limits in force."""
        return {
            **info,
            "max_client_batch_size": limits.max_client_batch_size,
            "max_body_bytes": limits.max_body_bytes,
            "max_batch_tokens": batcher.config.max_batch_tokens,
            "max_wait_ms": batcher.config.max_wait_ms,
            "max_queue_texts": batcher.config.max_queue_texts,
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        """Prometheus text exposition."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _option(default, help_text: str, **extra):
    """A dataclass field with its one-line help (the CLI flags come from these)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ServeOptions:
    """Every option of `serve_onnx.py http`: the single source for `serve` and the CLI flags."""

    export_dir: str = _option(None, "Export directory written by export.py.", positional=True)
    host: str = _option("127.0.0.1", "Address to listen on. The default accepts local clients only; 0.0.0.0 exposes the service (it has no authentication).")
    port: int = _option(8000, "TCP port (0: any free port).")
    model: str = _option("default", "Which ONNX file of the export to serve: default, fp32, optimized or int8.")
    num_threads: Optional[int] = _option(None, "onnxruntime threads (default: one per physical core).")
    max_batch_tokens: int = _option(BatcherConfig.max_batch_tokens, "Padded tokens (texts x longest text) per model call.")
    max_batch_texts: int = _option(BatcherConfig.max_batch_texts, "Texts per model call.")
    max_wait_ms: float = _option(BatcherConfig.max_wait_ms, "How long a request may wait for others to share its model call.")
    max_queue_texts: int = _option(BatcherConfig.max_queue_texts, "Texts waiting or running; beyond this, requests get 503 with Retry-After.")
    max_client_batch_size: int = _option(ServeLimits.max_client_batch_size, "Inputs per request; more gets 413.")
    max_body_bytes: int = _option(ServeLimits.max_body_bytes, "Request body size in bytes; more gets 413.")
    ort_spinning: bool = _option(False, "Let onnxruntime's idle threads busy-wait between model calls (off: on small machines they would take CPU from tokenization and HTTP).")
    shutdown_timeout_s: float = _option(30.0, "On SIGTERM/SIGINT, how long to let accepted requests finish.")
    log_level: str = _option("info", "uvicorn log level: critical, error, warning, info or debug (debug adds an access log).")

    def batcher_config(self) -> BatcherConfig:
        """The micro-batcher limits of these options."""
        return BatcherConfig(
            max_batch_tokens=self.max_batch_tokens, max_batch_texts=self.max_batch_texts,
            max_wait_ms=self.max_wait_ms, max_queue_texts=self.max_queue_texts,
        )

    def limits(self) -> ServeLimits:
        """The per-request limits of these options."""
        return ServeLimits(max_client_batch_size=self.max_client_batch_size, max_body_bytes=self.max_body_bytes)

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
        for check in (self.batcher_config().validate, self.limits().validate):
            try:
                check()
            except UserError as err:
                problems.append(str(err))
        if problems:
            raise UserError(format_problems("cannot serve", problems))


def serve(options: ServeOptions) -> None:
    """Load an export directory and serve it with uvicorn until SIGINT/SIGTERM (graceful)."""
    import uvicorn

    from jbert.serve.runtime import OnnxClassifier

    options.validate()
    classifier = OnnxClassifier.from_export_dir(
        options.export_dir, model=options.model, num_threads=options.num_threads, allow_spinning=options.ort_spinning
    )
    if not is_loopback(options.host):
        logger.warning("listening on %s: the service has no authentication; put it behind a proxy that has", options.host)
    app = create_app(classifier, options.batcher_config(), options.limits(), options.shutdown_timeout_s)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level=options.log_level,
        timeout_graceful_shutdown=int(math.ceil(options.shutdown_timeout_s)), access_log=options.log_level == "debug",
    )
    uvicorn.Server(config).run()
