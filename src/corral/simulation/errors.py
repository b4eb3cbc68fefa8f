"""Errors of the simulator: bad input, one line each."""

from __future__ import annotations

from corral.core.errors import InvalidInput


class SimulationError(InvalidInput):
    """The simulation cannot run on this input (the message says why)."""


class UnplaceableError(SimulationError):
    """Some guests fit on no host at the start: they are listed, never dropped."""

    def __init__(self, message: str, guests: tuple[str, ...]) -> None:
        super().__init__(message)
        self.guests = guests
