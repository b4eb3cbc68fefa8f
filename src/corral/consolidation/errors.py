"""Errors of the consolidation core: bad input, one line each (the CLI exits non-zero)."""

from __future__ import annotations

from corral.core.errors import InvalidInput


class PolicyError(InvalidInput):
    """An unknown policy name or a parameter out of range."""
