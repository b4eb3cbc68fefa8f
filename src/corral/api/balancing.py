"""The balancer inside `corral serve`: `BalancerService.run` in a thread (a round every interval while
the mode is not off). When another process holds the cluster's balancer (`corral balance --daemon`),
this one waits and tries again each interval: one balancer per cluster."""

from __future__ import annotations

import logging
import threading

from corral.core.errors import Conflict
from corral.services.balancer import BalancerService

log = logging.getLogger("corral.balancer")


class BalancerLoop:
    def __init__(self, balancer: BalancerService) -> None:
        self.balancer = balancer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.waiting: str | None = None  # why it does not run, when it does not

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="corral-balancer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.balancer.run(self._stop)
            except Conflict as exc:
                if self.waiting != exc.message:
                    log.warning("%s; this server's balancer waits", exc.message)
                self.waiting = exc.message
            except Exception:  # the server keeps serving; the next interval tries again
                log.exception("the balancer stopped; it starts again next interval")
            self._stop.wait(self.balancer.settings.balancer.interval_s)
