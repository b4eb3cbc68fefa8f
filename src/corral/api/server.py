"""The HTTP/1.1 protocol `corral serve` runs uvicorn with: uvicorn's h11 protocol plus one deadline for
clients that are slow outside a request.

uvicorn closes a keep-alive connection that stays silent (`timeout_keep_alive`), but not one that sends
a request's head a byte at a time, nor a connection that keeps sending a body the application never read
(after a 413, say): both can hold a connection for ever. Here a connection on which no request is being
handled has `timeout_s` to deliver the next request's head, from its opening or from the end of the
previous response, and is closed otherwise. While a request is handled, the BodyLimit middleware's
deadline applies instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_guard()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_guard()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_guard()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._cancel_guard()  # the connection is the WebSocket protocol's now
        super().handle_websocket_upgrade(event)

    def _arm_guard(self) -> None:
        self._cancel_guard()
        self._guard = self.loop.call_later(self.timeout_s, self._guard_expired)

    def _cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _guard_expired(self) -> None:
        self._guard = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being handled; the guard is armed again when its response is complete
        if not self.transport.is_closing():
            self.transport.close()


def guarded_http_protocol(timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`http=`), with its deadline."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"timeout_s": timeout_s})
