"""Names the planner's interfaces share, importable without numpy (the CLI reads them at start-up)."""

from __future__ import annotations

RESOURCES: tuple[str, ...] = ("cpu", "mem", "disk", "net")
FORMATS: tuple[str, ...] = ("auto", "planetlab", "bitbrains", "collect", "csv")
