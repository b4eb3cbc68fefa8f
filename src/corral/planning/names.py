"""Names the planner's interfaces share, importable without numpy (the CLI reads them at start-up)."""

from __future__ import annotations

RESOURCES: tuple[str, ...] = ("cpu", "mem", "disk", "net")
FORMATS: tuple[str, ...] = ("auto", "planetlab", "bitbrains", "collect", "csv")
# The host kinds a plan uses when none is named: the one place these defaults live.
DEFAULT_HOST_KIND = "ml110-g5"  # what servers are consolidated onto
DEFAULT_BEFORE_KIND = "legacy-1u"  # each server's own machine, before
