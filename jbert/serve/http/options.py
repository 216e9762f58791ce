"""The options of `serve_onnx.py http`, checked once: the batcher limits, the request limits, the API key.

`ServeOptions.validate()` reports every problem at once and hands back what the service runs with
(`ServeSetup`), so the key file is read one time and nothing is checked again further down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from jbert.core.cli import option
from jbert.core.errors import UserError, format_problems
from jbert.serve.http.microbatch import BatcherConfig
from jbert.serve.http.protocol import ConnectionLimits
from jbert.serve.http.request import ServeLimits
from jbert.serve.runtime.batch_inputs import MAX_TEXT_CHARS_LIMIT
from jbert.serve.http.security import load_api_key

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass
class ServeSetup:
    """What `ServeOptions.validate` hands the service: checked limits and the API key read from its file."""

    batcher_config: BatcherConfig
    limits: ServeLimits
    api_key: str | None  # None: no --api-key-file, every route open
    key_warnings: list[str] = field(default_factory=list)  # e.g. the key file is readable by others
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)


@dataclass
class ServeOptions:
    """Every option of `serve_onnx.py http`: the single source for `serve` and the CLI flags."""

    export_dir: str = option(None, "Export directory written by export.py.", positional=True)
    host: str = option("127.0.0.1", "Address to listen on. The default accepts local clients only; any other address prints a warning (and without --api-key-file, anyone who reaches it can use it).")
    port: int = option(8000, "TCP port (0: any free port).")
    api_key_file: Optional[str] = option(None, "File holding a bearer token (one line, at least 16 characters); when given, every route but /health requires 'Authorization: Bearer <token>'.")
    model: str = option("default", "Which ONNX file of the export to serve: default, fp32, optimized or int8.")
    num_threads: Optional[int] = option(None, "onnxruntime threads (default: one per physical core).")
    max_batch_tokens: int = option(BatcherConfig.max_batch_tokens, "Padded tokens (texts x longest text) per model call.")
    max_batch_texts: int = option(BatcherConfig.max_batch_texts, "Texts per model call.")
    max_wait_ms: float = option(BatcherConfig.max_wait_ms, "How long a request may wait for others to share its model call.")
    max_queue_texts: int = option(BatcherConfig.max_queue_texts, "Texts waiting or running; beyond this, requests get 503 with Retry-After.")
    max_client_batch_size: int = option(ServeLimits.max_client_batch_size, "Inputs per request; more gets 422.")
    max_body_bytes: int = option(ServeLimits.max_body_bytes, "Request body size in bytes; more gets 413.")
    max_text_chars: int = option(ServeLimits.max_text_chars, f"Characters per text; more gets 422. At most {MAX_TEXT_CHARS_LIMIT:,} (the limit of batch scoring too): MeCab's native code crashes the process on texts from about 192,000 characters.")
    max_connections: int = option(ConnectionLimits.max_connections, "Open connections held; at the cap a new one closes the oldest idle one, and when all have a request in progress a few more are taken for GET /health only (others 503), beyond that new ones are closed.")
    read_timeout_s: float = option(ConnectionLimits.read_timeout_s, "Seconds a client has to send a request's headers and body (from connecting, or from the first byte of a later request); slower: 408 and the connection is closed.")
    keep_alive_timeout_s: float = option(5.0, "Seconds an idle kept-alive connection stays open waiting for the next request.")
    ort_spinning: bool = option(False, "Let onnxruntime's idle threads busy-wait between model calls (off: on small machines they would take CPU from tokenization and HTTP).")
    shutdown_timeout_s: float = option(30.0, "On SIGTERM/SIGINT, how long to drain: /health turns 503, new requests get 503, accepted ones are answered.")
    log_level: str = option("info", "uvicorn log level: critical, error, warning, info or debug (debug adds an access log).")

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

    def validate(self) -> ServeSetup:
        """Check every option once (one UserError lists all problems); read the API key file.

        Returns the batcher limits, request limits and API key that `serve` runs with.
        """
        problems = []
        if not self.export_dir:
            problems.append("EXPORT_DIR is required")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be between 0 and 65535, got {self.port}")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"--num-threads must be at least 1, got {self.num_threads}")
        if self.max_connections < 1:
            problems.append(f"--max-connections must be at least 1, got {self.max_connections}")
        for name in ("read_timeout_s", "keep_alive_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"--{name.replace('_', '-')} must be more than 0, got {getattr(self, name)}")
        if self.shutdown_timeout_s < 0:
            problems.append(f"--shutdown-timeout-s must not be negative, got {self.shutdown_timeout_s}")
        if self.log_level not in LOG_LEVELS:
            problems.append(f"--log-level {self.log_level!r} is not one of critical, error, warning, info, debug")
        # Each part checks itself as it is built; its UserError joins the list.
        batcher_config = limits = None
        api_key, key_warnings = None, []
        try:
            batcher_config = self.batcher_config()
        except UserError as err:
            problems.append(str(err))
        try:
            limits = self.limits()
        except UserError as err:
            problems.append(str(err))
        if self.api_key_file is not None:
            try:
                api_key, key_warnings = load_api_key(self.api_key_file)
            except UserError as err:
                problems.append(str(err))
        if problems:
            raise UserError(format_problems("cannot serve", problems))
        return ServeSetup(batcher_config, limits, api_key, key_warnings,
                          ConnectionLimits(self.max_connections, self.read_timeout_s))
