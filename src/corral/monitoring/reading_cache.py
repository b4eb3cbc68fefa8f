"""The last counter reading `corral list` took, kept in a file so the next call can measure CPU %
over the time in between instead of sleeping to open a window."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

from corral.adapters.files import write_atomic
from corral.monitoring.rates import Counters


def load(path: Path) -> list[Counters]:
    try:
        return [Counters(**item) for item in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []  # none yet, or from another version: the caller samples afresh


def save(path: Path, readings: list[Counters]) -> None:
    with contextlib.suppress(OSError):  # only costs a short sample next time
        write_atomic(path, json.dumps([asdict(r) for r in readings]))
