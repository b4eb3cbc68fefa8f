"""Tags on guests: short labels kept in Corral's metadata in the domain XML (`corral tag web prod`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from corral.core.errors import InvalidInput

TAG_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,31}"
_TAG = re.compile(TAG_PATTERN)
MAX_TAGS = 32  # on one guest


def is_tag(value: str) -> bool:
    return isinstance(value, str) and _TAG.fullmatch(value) is not None


def check_tag(value: str) -> str:
    """`value` when it is a tag, else InvalidInput naming the problem."""
    if not is_tag(value):
        shown = value if isinstance(value, str) else str(value)
        raise InvalidInput(f"invalid tag {shown[:40]!r}: use 1-32 lowercase letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit (no spaces or markup)")
    return value


def check_tags(values: Iterable[str]) -> tuple[str, ...]:
    """Every tag checked (the first bad one refused), duplicates dropped, in their order."""
    tags = tuple(dict.fromkeys(check_tag(v) for v in values))
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"{len(tags)} tags: a guest has at most {MAX_TAGS}")
    return tags


def read_tag(text: str) -> str:
    """A tag as the metadata holds it; ValueError for anything else (edited by hand: ignored)."""
    if not is_tag(text):
        raise ValueError(f"not a tag: {text[:40]!r}")
    return text
