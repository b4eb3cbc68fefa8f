"""Errors raised by the consolidation planner. Every message names what is wrong (and where)."""

from __future__ import annotations

from corral.core.errors import InvalidInput


def one_line(text: object) -> str:
    """``text`` as one printable line: newlines, escape sequences and other control characters
    (from file names or file contents quoted in a message) escaped."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


class PlanningError(InvalidInput):
    """Base class of every planning error: bad input (422 in the API); the CLI prints its message on
    one line and exits 1. The message is always one printable line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class TraceFormatError(PlanningError):
    """A trace file is malformed: the message names the file and, when known, the line."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class EmptyInputError(PlanningError):
    """No traces were found where some were expected."""


class CatalogError(PlanningError):
    """The host catalog (TOML) is malformed or names an unknown kind."""


class InfeasibleError(PlanningError):
    """The request cannot be satisfied at all (e.g. an impossible cap or no server fits)."""


class PlanFormatError(PlanningError):
    """A plan.json file does not follow the documented schema."""
