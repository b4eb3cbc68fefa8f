"""Login throttling that a stranger cannot turn against a user.

Failures are counted per (client address, user name): the first few are free, then each further attempt
from that address for that name must wait a delay that doubles with every failure, up to a cap. Another
address is not slowed by them, so whoever guesses a name's password from one address does not lock its
owner out of another. A looser cap per address, across names, stops one address from trying many
names. An attempt counts from the moment it begins (so concurrent guesses cannot slip past) and is
forgiven when it succeeds. A refused attempt is not counted and never reaches the password check.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

FREE_FAILURES = 3  # failed logins of one name from one address before delays begin
BASE_DELAY_S = 1.0  # then 1, 2, 4, 8, ... s must pass after the last attempt
MAX_DELAY_S = 300.0  # ... up to 5 minutes
FORGET_S = 3600.0  # a pair's failures are forgotten an hour after its last attempt
ADDRESS_FAILURES = 30  # failed logins from one address, whatever the names,
ADDRESS_WINDOW_S = 600.0  # within 10 minutes: further attempts from it wait
MAX_TRACKED = 10_000  # pairs or addresses remembered before old ones are pruned


class TooManyAttempts(Exception):
    def __init__(self, retry_after_s: float, scope: Literal["name", "address"] = "name") -> None:
        super().__init__("too many failed logins")
        self.retry_after_s = retry_after_s
        self.scope = scope

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (for Retry-After)."""
        return max(1, math.ceil(self.retry_after_s))


@dataclass(frozen=True)
class Attempt:
    """A login attempt in progress, counted as a failure until it succeeds (or is withdrawn)."""

    name: str
    address: str
    started: float


@dataclass
class _Pair:
    failures: int
    last: float  # when the last counted attempt began


def delay_after(failures: int) -> float:
    """How long after the last attempt the next one may begin, after `failures` failures."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY_S, BASE_DELAY_S * 2.0 ** min(failures - FREE_FAILURES, 32))


class LoginThrottle:
    """Thread-safe; `clock` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._addresses: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def begin(self, user: str, address: str) -> Attempt:
        """Count an attempt, or raise TooManyAttempts (with how long to wait) without counting it."""
        key = (address, user.lower())
        now = self.clock()
        with self._lock:
            self._prune(now)
            pair = self._pairs.get(key)
            if pair is not None and now - pair.last > FORGET_S:
                pair = None
            wait = 0.0 if pair is None else pair.last + delay_after(pair.failures) - now
            if wait > 0:
                raise TooManyAttempts(wait, "name")
            times = self._addresses.setdefault(address, deque())
            while times and times[0] <= now - ADDRESS_WINDOW_S:
                times.popleft()
            if len(times) >= ADDRESS_FAILURES:
                raise TooManyAttempts(times[0] + ADDRESS_WINDOW_S - now, "address")
            self._pairs[key] = _Pair(1 if pair is None else pair.failures + 1, now)
            times.append(now)
        return Attempt(key[1], address, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: that address and name start afresh."""
        with self._lock:
            self._pairs.pop((attempt.address, attempt.name), None)
            self._uncount(attempt)

    def withdraw(self, attempt: Attempt) -> None:
        """The attempt was not made (the server was too busy to check the password): it does not count."""
        with self._lock:
            pair = self._pairs.get((attempt.address, attempt.name))
            if pair is not None:
                pair.failures -= 1
                if pair.failures <= 0:
                    del self._pairs[(attempt.address, attempt.name)]
            self._uncount(attempt)

    def _uncount(self, attempt: Attempt) -> None:
        times = self._addresses.get(attempt.address)
        if times is not None and attempt.started in times:
            times.remove(attempt.started)

    def _prune(self, now: float) -> None:
        if len(self._pairs) > MAX_TRACKED:
            self._pairs = {k: p for k, p in self._pairs.items() if now - p.last <= FORGET_S}
            if len(self._pairs) > MAX_TRACKED:  # keep the most recent half
                recent = sorted(self._pairs.items(), key=lambda item: item[1].last)[-(MAX_TRACKED // 2):]
                self._pairs = dict(recent)
        if len(self._addresses) > MAX_TRACKED:
            self._addresses = {a: t for a, t in self._addresses.items() if t and t[-1] > now - ADDRESS_WINDOW_S}
            if len(self._addresses) > MAX_TRACKED:
                recent_addresses = sorted(self._addresses.items(), key=lambda item: item[1][-1])
                self._addresses = dict(recent_addresses[-(MAX_TRACKED // 2):])
