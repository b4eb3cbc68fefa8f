"""Migrations started through the API: each runs `MigrationService.migrate` in a thread of its own and is
kept in memory with its latest progress, then its result or error, for `GET /api/migrations/{id}` and the
WebSocket that streams it. An abort sets the migration's cancel event (the guest stays on the source).
Finished migrations are kept for an hour (at most KEEP_FINISHED of them), and forgotten when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from corral.adapters.libvirt_host import JobProgress
from corral.core.errors import Busy, Conflict, CorralError, NotFound
from corral.services.migration import MigrationAborted, MigrationPlan, MigrationResult, MigrationService

log = logging.getLogger("corral.api")
MAX_RUNNING = 8  # migrations at once through the API
KEEP_FINISHED = 100
KEEP_FINISHED_S = 3600.0
STOP_WAIT_S = 10.0  # when the server stops, running migrations are aborted and waited for this long
QUEUE_DEPTH = 8  # a slow WebSocket client loses intermediate progress, never the end
ENDED = ("succeeded", "failed", "aborted")


@dataclass(frozen=True)
class MigrationStatus:
    """One migration started through the API, as it stands."""

    id: str
    guest: str
    source: str
    dest: str
    live: bool
    copy_storage: bool
    user: str  # who started it
    started: float  # unix seconds
    state: str  # running | succeeded | failed | aborted
    abort_requested: bool
    progress: JobProgress | None  # the latest job statistics (a live migration; null before the first)
    result: MigrationResult | None  # once it succeeded
    error: str | None  # once it failed or was aborted: the one line the CLI would print
    error_status: int | None  # the HTTP status of that error
    finished: float | None  # unix seconds

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["progress"] = None if self.progress is None else dict(self.progress.__dict__)
        data["result"] = None if self.result is None else self.result.as_dict()
        return data


@dataclass
class _Job:
    status: MigrationStatus
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[MigrationStatus]]] = field(default_factory=set)


class MigrationJobs:
    """The migrations this server runs or ran. Thread-safe."""

    def __init__(self, migration: MigrationService) -> None:
        self.migration = migration
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def start(self, plan: MigrationPlan, user: str, *, offline: bool = False, copy_storage: bool = False,
              bandwidth_mib_s: int | None = None, max_downtime_ms: int | None = None,
              postcopy: bool = False) -> MigrationStatus:
        """Run a checked migration in the background; at most one per guest and MAX_RUNNING at once."""
        with self._lock:
            self._prune()
            running = [j for j in self._jobs.values() if j.status.state == "running"]
            if any(j.status.guest == plan.guest for j in running):
                raise Conflict(f"{plan.guest} is already being migrated")
            if len(running) >= MAX_RUNNING:
                raise Busy(f"{MAX_RUNNING} migrations are running: wait for one to end")
            status = MigrationStatus(secrets.token_hex(8), plan.guest, plan.source, plan.dest, plan.live,
                                     copy_storage, user, time.time(), "running", False, None, None, None, None, None)
            job = _Job(status)
            self._jobs[status.id] = job

        def run() -> None:
            try:
                result = self.migration.migrate(
                    plan.guest, plan.dest, offline=offline, copy_storage=copy_storage,
                    bandwidth_mib_s=bandwidth_mib_s, max_downtime_ms=max_downtime_ms, postcopy=postcopy,
                    progress=lambda progress: self._update(job, progress=progress), cancel=job.cancel)
            except MigrationAborted as exc:
                self._update(job, state="aborted", error=exc.message, error_status=exc.status, finished=time.time())
            except CorralError as exc:
                self._update(job, state="failed", error=exc.message, error_status=exc.status, finished=time.time())
            except Exception as exc:  # reported like the API's unexpected errors, and logged
                log.exception("migration of %s failed", plan.guest)
                self._update(job, state="failed", error=f"internal error: {type(exc).__name__}", error_status=500,
                             finished=time.time())
            else:
                self._update(job, state="succeeded", result=result, finished=time.time())

        job.thread = threading.Thread(target=run, name=f"api-migrate-{plan.guest}", daemon=True)
        job.thread.start()
        return status

    def _update(self, job: _Job, **changes: Any) -> None:
        with self._lock:
            job.status = replace(job.status, **changes)
            status, subscribers = job.status, list(job.subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # that client's loop is closed
                loop.call_soon_threadsafe(_offer, queue, status)

    def _prune(self) -> None:
        """Forget finished migrations older than KEEP_FINISHED_S, and all but the latest KEEP_FINISHED."""
        now = time.time()
        ended = sorted((j for j in self._jobs.values() if j.status.finished is not None),
                       key=lambda j: j.status.finished or 0.0)
        for i, job in enumerate(ended):
            if i < len(ended) - KEEP_FINISHED or now - (job.status.finished or now) > KEEP_FINISHED_S:
                del self._jobs[job.status.id]

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no migration {job_id!r} (finished ones are kept for an hour)")
        return job

    def get(self, job_id: str) -> MigrationStatus:
        return self._job(job_id).status

    def all(self) -> list[MigrationStatus]:
        """Every migration kept, oldest first."""
        with self._lock:
            self._prune()
            return sorted((j.status for j in self._jobs.values()), key=lambda s: s.started)

    def abort(self, job_id: str) -> MigrationStatus:
        """Ask a running migration to stop (it ends as "aborted", the guest on its source)."""
        job = self._job(job_id)
        if job.status.state != "running":
            raise Conflict(f"the migration of {job.status.guest} has already ended ({job.status.state})")
        job.cancel.set()
        self._update(job, abort_requested=True)
        return job.status

    def subscribe(self, job_id: str) -> tuple[MigrationStatus, asyncio.Queue[MigrationStatus]]:
        """The migration as it stands and a queue of what follows (call from the event loop)."""
        job = self._job(job_id)
        queue: asyncio.Queue[MigrationStatus] = asyncio.Queue(QUEUE_DEPTH)
        with self._lock:
            job.subscribers.add((asyncio.get_running_loop(), queue))
            return job.status, queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[MigrationStatus]) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.subscribers = {(lp, q) for lp, q in job.subscribers if q is not queue}

    def stop(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Abort what still runs (each guest stays on its source) and wait for it, within `timeout_s`."""
        with self._lock:
            running = [j for j in self._jobs.values() if j.status.state == "running"]
        for job in running:
            job.cancel.set()
        deadline = time.monotonic() + timeout_s
        for job in running:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))


def _offer(queue: asyncio.Queue[MigrationStatus], status: MigrationStatus) -> None:
    """Put the newest status in the queue; when it is full, drop the oldest progress (an end is never dropped:
    it is the last message anyway)."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(status)
