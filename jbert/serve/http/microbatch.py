"""Micro-batching of concurrent HTTP requests: a bounded queue, a token budget per batch, a maximum wait.

Requests arrive one by one (an HTTP handler awaits `MicroBatcher.predict`). Each is tokenized
(short ones right away, long ones on a tokenizer thread), queued with its token count, and a single batch loop packs queued requests into
one model call until the padded batch would exceed `max_batch_tokens` or `max_wait_ms` has passed
since the first request of the batch arrived. The model runs on its own thread, so the event loop
keeps accepting requests, and tokenizing the next requests overlaps with running the current batch
(onnxruntime releases the GIL while it computes).

This layer knows nothing of HTTP and nothing of ONNX: it needs a model with
`encode(texts, text_pairs, truncate)` (and its `truncation_side` keyword, when a request names a
side), `run_logits(encodings, batch_size)`, and for the default
answer `scores_from_logits(logits)` and `format_predictions(scores, truncated, top_k)` (see
`jbert.serve.runtime.OnnxClassifier`), and reports what it does to an optional observer
(`jbert.serve.http.metrics` turns that into Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from jbert.core.errors import UserError

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The queue holds `max_queue_texts` texts already: the client should retry later."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDownError(Exception):
    """The batcher is stopping and accepts no new work."""


class BatchObserver(Protocol):
    """Receives measurements from the batcher (all methods optional to implement meaningfully)."""

    def tokenized(self, texts: int, seconds: float) -> None:
        """A request of `texts` inputs was tokenized in `seconds`."""

    def batch_done(self, texts: int, padded_tokens: int, requests: int, seconds: float) -> None:
        """A model call over `texts` inputs from `requests` requests took `seconds`."""

    def queue_depth(self, texts: int) -> None:
        """Texts accepted and not yet answered changed to `texts`."""


class _NullObserver:
    def tokenized(self, texts: int, seconds: float) -> None:
        pass

    def batch_done(self, texts: int, padded_tokens: int, requests: int, seconds: float) -> None:
        pass

    def queue_depth(self, texts: int) -> None:
        pass


@dataclass
class BatcherConfig:
    """Limits of the micro-batcher."""

    max_batch_tokens: int = 16384  # padded tokens (texts x longest) per model call
    max_batch_texts: int = 256  # texts per model call, whatever their length
    max_wait_ms: float = 5.0  # how long the first request of a batch may wait for company
    max_queue_texts: int = 2048  # texts accepted and not answered; beyond this: QueueFullError
    model_batch_size: int = 64  # rows per onnxruntime run inside one model call (length-sorted)
    inline_tokenize_chars: int = 1024  # requests up to this many characters are tokenized on the event loop

    def validate(self) -> None:
        """Raise UserError listing every out-of-range limit."""
        problems = [
            f"{name} must be at least {low}, got {getattr(self, name)}"
            for name, low in (
                ("max_batch_tokens", 1),
                ("max_batch_texts", 1),
                ("max_wait_ms", 0),
                ("max_queue_texts", 1),
                ("model_batch_size", 1),
                ("inline_tokenize_chars", 0),
            )
            if getattr(self, name) < low
        ]
        if problems:
            raise UserError("invalid batching limits: " + "; ".join(problems))

    def __post_init__(self):
        # Checked where it is made, once: the batcher and the service take a config as valid.
        self.validate()


# What a request's answer is made of: (its logits rows, its encodings) -> the result for the route.
Formatter = Callable[[Any, list], Any]


@dataclass
class _Request:
    encodings: list
    format: Formatter
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def longest(self) -> int:
        return max(len(e.input_ids) for e in self.encodings)


class MicroBatcher:
    """Collects concurrent `predict` calls into model calls bounded by tokens, texts and wait time."""

    def __init__(self, model: Any, config: BatcherConfig | None = None, observer: BatchObserver | None = None):
        """`model`: a `jbert.serve.runtime.OnnxClassifier` (or anything with the same four methods)."""
        self.model = model
        self.config = config or BatcherConfig()
        self.observer = observer or _NullObserver()
        self._queue: asyncio.Queue[_Request | None] | None = None
        self._loop_task: asyncio.Task | None = None
        self._pending_texts = 0  # accepted (tokenizing, queued or running) and not yet answered
        self._queued_texts = 0  # of those, the texts already tokenized and handed to the batch loop
        self._recent_texts_per_s = 0.0  # throughput of the last model call, for Retry-After
        self._closing = False
        self._stopped = False
        # One thread each: tokenization is GIL-bound Python + MeCab, the model call is
        # onnxruntime's own thread pool; more threads here would only fight over the cores.
        self._tokenize_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jbert-tokenize")
        self._model_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jbert-model")

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """True between `start()` and the beginning of `stop()`."""
        return self._loop_task is not None and not self._closing and not self._loop_task.done()

    @property
    def pending_texts(self) -> int:
        """Texts accepted and not yet answered (the queue depth reported as a metric)."""
        return self._pending_texts

    async def start(self) -> None:
        """Start the batch loop on the running event loop."""
        if self._loop_task is not None:
            return
        self._queue = asyncio.Queue()
        self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop(), name="jbert-batch-loop")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Refuse new work, finish everything already accepted, then stop the threads (idempotent).

        The HTTP layer calls it when a drain ends and again from the app's lifespan shutdown.
        """
        if self._loop_task is None or self._stopped:
            return
        self._stopped = True
        self._closing = True
        # Requests still tokenizing will enqueue after this; wait until they have, so the
        # sentinel really comes last.
        deadline = time.monotonic() + timeout_s
        while self._pending_texts > self._queued_texts and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            logger.warning("batcher did not drain within %.0f s; cancelling the remaining requests", timeout_s)
            self._loop_task.cancel()
        self._tokenize_pool.shutdown(wait=True)
        self._model_pool.shutdown(wait=True)

    # ------------------------------------------------------------------ requests
    async def predict(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        top_k: int | None = None,
        truncate: bool = True,
        format: Formatter | None = None,
        truncation_side: str | None = None,
    ) -> Any:
        """Classify one request's texts together with whatever else is queued; results in order.

        `truncation_side` ("left"/"right") cuts this request's long texts on that side; None: the
        model's own side. It applies to this request alone, whatever it is batched with.

        `format(logits, encodings)` turns this request's rows of logits into its answer (it may raise
        InputError); by default the model's result dicts with `top_k`. Raises QueueFullError when
        accepting would exceed `max_queue_texts`, ShuttingDownError
        while stopping, and the model's InputError for unusable inputs.
        """
        if self._closing or self._loop_task is None:
            raise ShuttingDownError("the server is shutting down" if self._closing else "the batcher is not started")
        count = len(texts)
        if count == 0:
            return []
        if self._pending_texts + count > self.config.max_queue_texts:
            raise QueueFullError(
                f"the queue is full ({self._pending_texts} texts waiting, limit {self.config.max_queue_texts}); retry shortly",
                retry_after_s=max(1, round(self._estimated_drain_s())),
            )
        self._pending_texts += count
        self.observer.queue_depth(self._pending_texts)
        queued = False
        try:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            chars = sum(len(t) for t in texts if isinstance(t, str)) + sum(len(t) for t in text_pairs or () if isinstance(t, str))
            # The side is passed only when named, so a model without the keyword keeps working.
            encode = (self.model.encode if truncation_side is None
                      else functools.partial(self.model.encode, truncation_side=truncation_side))
            if chars <= self.config.inline_tokenize_chars:
                # Short requests (the common case) are tokenized right here: tens of microseconds,
                # cheaper than two thread hand-offs that each wait for the GIL.
                encodings = encode(texts, text_pairs, truncate)
            else:
                encodings = await loop.run_in_executor(self._tokenize_pool, encode, texts, text_pairs, truncate)
            self.observer.tokenized(count, time.perf_counter() - started)
            future = loop.create_future()
            self._queued_texts += count
            queued = True
            await self._queue.put(_Request(encodings, format or self._default_format(top_k), future))
            return await future
        finally:
            self._pending_texts -= count
            if queued:
                self._queued_texts -= count
            self.observer.queue_depth(self._pending_texts)

    def _default_format(self, top_k: int | None) -> Formatter:
        model = self.model
        return lambda logits, encodings: model.format_predictions(
            model.scores_from_logits(logits), [e.truncated for e in encodings], top_k)

    def _estimated_drain_s(self) -> float:
        """Rough seconds until the queue has room again, for Retry-After."""
        rate = self._recent_texts_per_s
        return self._pending_texts / rate if rate > 0 else 1.0

    # ------------------------------------------------------------------ the batch loop
    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Request | None = None  # a request that did not fit the previous batch
        stopping = False
        while not (stopping and carry is None):
            if carry is not None:
                first, carry = carry, None
            else:
                first = await self._queue.get()
                if first is None:
                    break
            batch = [first]
            texts = len(first.encodings)
            longest = first.longest
            deadline = first.enqueued_at + self.config.max_wait_ms / 1000.0
            while texts < self.config.max_batch_texts and not stopping:
                try:
                    remaining = deadline - time.perf_counter()
                    if remaining > 0:
                        item = await asyncio.wait_for(self._queue.get(), timeout=remaining)
                    else:
                        item = self._queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if item is None:
                    stopping = True  # finish this batch and whatever is carried, then end
                    break
                new_longest = max(longest, item.longest)
                new_texts = texts + len(item.encodings)
                if new_longest * new_texts > self.config.max_batch_tokens or new_texts > self.config.max_batch_texts:
                    carry = item
                    break
                batch.append(item)
                texts, longest = new_texts, new_longest
            await self._run_batch(loop, batch, texts, longest)

    async def _run_batch(self, loop, batch: list[_Request], texts: int, longest: int) -> None:
        encodings = [e for request in batch for e in request.encodings]
        started = time.perf_counter()
        try:
            logits = await loop.run_in_executor(
                self._model_pool, self.model.run_logits, encodings, self.config.model_batch_size
            )
        except Exception as err:  # a model failure answers these requests, the loop goes on
            logger.exception("model call failed for a batch of %d texts", texts)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(err)
            return
        seconds = time.perf_counter() - started
        self._recent_texts_per_s = texts / seconds if seconds > 0 else 0.0
        self.observer.batch_done(texts, texts * longest, len(batch), seconds)
        offset = 0
        for request in batch:
            count = len(request.encodings)
            rows = logits[offset : offset + count]
            offset += count
            if request.future.done():  # the client went away (cancelled)
                continue
            try:
                request.future.set_result(request.format(rows, request.encodings))
            except Exception as err:
                request.future.set_exception(err)
