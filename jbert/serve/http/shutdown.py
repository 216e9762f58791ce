"""Graceful shutdown on SIGTERM/SIGINT: drain first, then stop uvicorn, then exit 0.

uvicorn alone, on SIGTERM, closes its listening socket at once: a load balancer's health probe
can no longer tell "draining" from "dead", and a new connection is refused at the TCP level. So
the first signal starts a drain instead, while the socket stays open:

1. /health answers 503 (error_type "draining"), so the replica leaves the rotation;
2. a new /predict gets 503 with a JSON body and Retry-After (a clean refusal, not a reset);
3. every /predict already accepted runs through the batcher and is answered;
4. then uvicorn's own shutdown closes the socket and the connections, the lifespan stops the
   batcher, and the process exits 0 (uvicorn would re-raise the signal and exit -15).

The whole shutdown is bounded by --shutdown-timeout-s, whatever clients do: uvicorn's own wait
for open connections gets only what the drain left of that budget (a stuck upload would
otherwise wait once in the drain and once more in uvicorn), then its tasks are cancelled. A
second signal skips what is left of the drain and a third (SIGINT) stops without waiting for
open connections.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Awaitable, Callable

import uvicorn

logger = logging.getLogger("jbert.serve.http")


class DrainGate:
    """Whether /predict still takes requests, and how many accepted ones are not answered yet."""

    def __init__(self):
        """Open, nothing in flight."""
        self.draining = False
        self.accepted_in_flight = 0

    def admit(self) -> bool:
        """Count one /predict in, or return False when draining (the caller answers 503)."""
        if self.draining:
            return False
        self.accepted_in_flight += 1
        return True

    def release(self) -> None:
        """One admitted /predict has its answer."""
        self.accepted_in_flight -= 1

    async def drain(self, stop_batcher: Callable[[float], Awaitable[None]], timeout_s: float) -> bool:
        """Refuse new work, wait for the admitted requests, stop the batcher; False if time ran out."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        # The batcher keeps running meanwhile: admitted requests may still be reading their body
        # or tokenizing, and must reach it.
        while self.accepted_in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        drained = self.accepted_in_flight == 0
        await stop_batcher(max(0.1, deadline - time.monotonic()))
        return drained


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains the app (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[bool]], budget_s: float | None = None):
        """`drain()`: the app's drain, returning False when it had to give up on some requests.

        `budget_s`: seconds from the signal to the end of uvicorn's wait for connections (default:
        the config's timeout_graceful_shutdown).
        """
        super().__init__(config)
        self._drain = drain
        self._budget_s = config.timeout_graceful_shutdown if budget_s is None else budget_s
        self._drain_requested = False
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame) -> None:
        """Signal handler: first signal drains, the second exits now, a third SIGINT forces."""
        # Deliberately not recording the signal in _captured_signals: uvicorn would re-raise it
        # after the shutdown and a clean drain would end with exit status -15 instead of 0.
        if not self._drain_requested:
            self._drain_requested = True  # picked up by on_tick, on the event loop
            logger.info("%s received: draining (send it again to stop without waiting)", signal.Signals(sig).name)
        elif not self.should_exit:
            logger.warning("second signal: stopping without waiting for the drain")
            self.should_exit = True
        elif sig == signal.SIGINT:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's 100 ms tick: starts the drain once a signal asked for it."""
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain_then_exit(), name="jbert-drain")
        return await super().on_tick(counter)

    async def _drain_then_exit(self) -> None:
        started = time.monotonic()
        try:
            drained = await self._drain()
        except Exception:  # a failed drain must still let the process stop
            logger.exception("drain failed; stopping anyway")
            drained = False
        if drained:
            logger.info("drained in %.2f s: every accepted request was answered", time.monotonic() - started)
        else:
            logger.warning("drain timed out after %.1f s; stopping with requests unanswered", time.monotonic() - started)
        if self._budget_s is not None:
            # uvicorn reads this when its shutdown begins: what is left of the one budget.
            self.config.timeout_graceful_shutdown = max(0.0, self._budget_s - (time.monotonic() - started))
        self.should_exit = True
