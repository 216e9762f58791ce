"""Prometheus metrics of the HTTP service: counters and histograms formatted by hand, and the ASGI
middleware that records every request's path, status and latency.

The batcher reports model calls through the `BatchObserver` hooks of `ServiceMetrics`; the
middleware reports HTTP requests. Everything runs on the event loop thread, so there are no locks.
"""

from __future__ import annotations

import math
import time

KNOWN_PATHS = ("/predict", "/v1/predict", "/", "/health", "/info", "/metrics")


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
        self.in_flight: dict[str, int] = {}  # path -> requests received and not yet answered (drain waits on these)
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
    def request_started(self, path: str) -> None:
        """One HTTP request received (its answer is still to come)."""
        path = path if path in KNOWN_PATHS else "other"
        self.in_flight[path] = self.in_flight.get(path, 0) + 1

    def request_done(self, path: str, status: int, seconds: float) -> None:
        """One HTTP request answered."""
        path = path if path in KNOWN_PATHS else "other"  # unknown paths must not blow up the series count
        self.in_flight[path] = self.in_flight.get(path, 1) - 1
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
            "# HELP jbert_requests_in_flight HTTP requests received and not yet answered, by path.",
            "# TYPE jbert_requests_in_flight gauge",
        ]
        lines += [f'jbert_requests_in_flight{{path="{path}"}} {count}' for path, count in sorted(self.in_flight.items())]
        for histogram in (
            self.request_latency, self.batch_size, self.batch_tokens, self.batch_requests,
            self.tokenization_time, self.inference_time,
        ):
            lines += histogram.render()
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware that records each HTTP request's path, status and latency."""

    def __init__(self, app, metrics: ServiceMetrics):
        """Wrap `app`, reporting to `metrics`."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self.metrics.request_started(scope["path"])
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
