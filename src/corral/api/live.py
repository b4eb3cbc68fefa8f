"""The monitoring sampler inside `corral serve`: `MonitoringService.run` in a thread, writing the
history store, keeping the latest samples in memory and handing each interval to WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from corral.monitoring.metrics import Sample
from corral.services.monitoring import MonitoringService

log = logging.getLogger("corral.api")
QUEUE_DEPTH = 4  # a slow client loses old intervals, never holds the sampler up


def sample_dict(sample: Sample) -> dict[str, Any]:
    return {"time": sample.time, "domain": sample.domain, "host": sample.host, **dict(sample.values)}


class LiveStats:
    def __init__(self, monitoring: MonitoringService, interval_s: float | None = None) -> None:
        self.monitoring = monitoring
        self.interval_s = interval_s
        self.latest: list[dict[str, Any]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[list[dict[str, Any]]]]] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="corral-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            self.monitoring.run(self._stop, interval_s=self.interval_s, on_samples=self._publish)
        except Exception as exc:  # the API keeps serving; /api/stats/live says why there is nothing new
            self.error = str(exc)
            log.exception("the monitoring sampler stopped")

    def _publish(self, samples: Sequence[Sample]) -> None:
        rows = [sample_dict(s) for s in samples]
        self.latest = rows
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # that client's loop is closed
                loop.call_soon_threadsafe(_offer, queue, rows)

    def subscribe(self) -> asyncio.Queue[list[dict[str, Any]]]:
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(QUEUE_DEPTH)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[dict[str, Any]]]) -> None:
        with self._lock:
            self._subscribers = {(lp, q) for lp, q in self._subscribers if q is not queue}


def _offer(queue: asyncio.Queue[list[dict[str, Any]]], rows: list[dict[str, Any]]) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(rows)
