"""The connection layer under the routes: a cap on open connections and a deadline for reading a request.

uvicorn 0.54 alone holds a client as long as the client likes: a fresh connection that sends
nothing, or sends its headers or body one byte at a time, is never closed (its keep-alive timer
only runs between two requests, and any byte cancels it), so a few hundred slow or idle sockets
use up the process's file descriptors before a bearer token is even looked at. Its
`limit_concurrency` does not help: it accepts every connection and answers 503 to every request,
/health included, once that many connections are merely open.

`GuardedH11Protocol` (uvicorn's h11 protocol, chosen explicitly so the behaviour does not depend
on whether httptools happens to be installed) adds:

- a read deadline: a request's headers and body must have arrived `read_timeout_s` after the
  connection was accepted, or after the first byte of a later request on a kept-alive connection;
  otherwise the server answers 408 (JSON body) and closes the connection;
- a connection cap: with `max_connections` open, a new connection closes the oldest connection
  that has no request in progress (idle, between keep-alive requests, or still sending headers);
  when every connection has a request in progress, up to `RESERVED_CONNECTIONS` more are taken,
  on which only GET /health is served (anything else: 503 and close), so an orchestrator's
  probe still gets an answer while the data routes are saturated; beyond those, a new connection
  is closed at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("jbert.serve.http")

RESERVED_CONNECTIONS = 8  # beyond --max-connections, for GET /health only


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the server holds and how long a client may take to send a request."""

    max_connections: int = 512
    read_timeout_s: float = 30.0


def _raw_response(status: int, reason: str, error_type: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with a JSON error body and Connection: close, as bytes."""
    body = json.dumps({"error": message, "error_type": error_type}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def health_only(app):
    """An ASGI app that serves GET /health through `app` and answers anything else 503 (reserved connections)."""
    body = json.dumps({"error": "the server holds --max-connections connections, all with a request in progress; "
                                "retry shortly", "error_type": "overloaded"}).encode()

    async def reserved(scope, receive, send):
        if scope["type"] != "http" or (scope["path"] == "/health" and scope["method"] in ("GET", "HEAD")):
            await app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return reserved


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read deadline and a connection cap (see the module docstring)."""

    limits = ConnectionLimits()  # set per server by `guarded_protocol`

    def connection_made(self, transport) -> None:  # type: ignore[override]
        """Take the connection (closing an idle one or refusing this one at the cap) and start its read deadline."""
        super().connection_made(transport)
        self._accepted_at = self.loop.time()
        self._read_deadline = None
        # Connections already told to close stay in the set until the loop runs their connection_lost.
        held = [c for c in self.connections if c is not self and not c.transport.is_closing()]
        if len(held) >= self.limits.max_connections:
            idle = [c for c in held if isinstance(c, GuardedH11Protocol) and c.waiting_for_request]
            if idle:
                min(idle, key=lambda c: c._accepted_at).transport.close()
            elif len(held) < self.limits.max_connections + RESERVED_CONNECTIONS:
                self.app = health_only(self.app)
            else:
                logger.warning("refused a connection: %d open, all with a request in progress", len(held))
                transport.close()
                return
        self._arm_read_deadline()

    @property
    def waiting_for_request(self) -> bool:
        """True when no request is in progress: idle, between keep-alive requests or still sending headers."""
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        """Start the deadline on a kept-alive connection's next request; stop it once a request is in."""
        if self._read_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm_read_deadline()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._cancel_read_deadline()

    def connection_lost(self, exc) -> None:
        """Forget the deadline with the connection."""
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def _arm_read_deadline(self) -> None:
        self._cancel_read_deadline()
        self._read_deadline = self.loop.call_later(self.limits.read_timeout_s, self._read_timed_out)

    def _cancel_read_deadline(self) -> None:
        if getattr(self, "_read_deadline", None) is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        """408 and close: the request's headers or body did not arrive within read_timeout_s."""
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        in_progress = cycle is not None and not cycle.response_complete
        if in_progress:
            # The route waiting for the body sees a disconnect; what it answers goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        if not (in_progress and cycle.response_started):
            what = "body" if in_progress else "headers"
            self.transport.write(_raw_response(
                408, "Request Timeout", "timeout",
                f"the request {what} did not arrive within {self.limits.read_timeout_s:g} s (--read-timeout-s)"))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class bound to `limits`, for uvicorn.Config(http=...)."""
    return type("JbertH11Protocol", (GuardedH11Protocol,), {"limits": limits})
