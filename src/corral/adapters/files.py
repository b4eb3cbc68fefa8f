"""Files a user names: does it exist, what does it say. (The core checks only their syntax.)"""

from __future__ import annotations

from pathlib import Path

from corral.core.errors import InvalidInput


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InvalidInput(f"{what} {str(path)!r} does not exist or is not a file")
    return path


def read_text(path: Path, what: str) -> str:
    require_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what} {str(path)!r} cannot be read: {exc}") from None
