"""Load trace files for the tiny image (`corral create --load-trace FILE`), read under bounds.

The file is the PlanetLab layout (one CPU percent 0-100 per line, blank lines ignored), read by the
planner's bounded importer: a file too large, a line too long, a value that is not a percent, or an
empty file is one line of `InvalidInput` naming the file and the line. How many steps a guest can
replay is the core's to say (`corral.core.spec.MAX_TRACE_STEPS`).
"""

from __future__ import annotations

from pathlib import Path

from corral.core.errors import InvalidInput

#: Far above any trace a guest can replay (864 steps of "100\n"), far below what would cost memory.
MAX_TRACE_FILE_BYTES = 1024 * 1024
MAX_TRACE_LINE_BYTES = 1024
MAX_TRACE_ROWS = 100_000


def read_load_trace(path: Path) -> list[float]:
    """The CPU percents of a PlanetLab-layout file, in order."""
    from corral.planning.importers import read_planetlab_file
    from corral.planning.limits import Budget, InputLimits

    limits = InputLimits(line_bytes=MAX_TRACE_LINE_BYTES, file_bytes=MAX_TRACE_FILE_BYTES,
                         total_bytes=MAX_TRACE_FILE_BYTES, rows=MAX_TRACE_ROWS)
    try:
        values = read_planetlab_file(path, Budget(limits))
    except InvalidInput as exc:  # PlanningError: already one line, naming the file (and the line)
        raise InvalidInput(f"load trace {exc.message}") from None
    return [float(v) for v in values]
