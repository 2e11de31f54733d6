"""Showing a user's object in one of our messages, safely.

A user's `__repr__` can raise or return pages of text; an error message that calls it must
still come out, readable. Private: the flow and strategy modules use it for their messages.
"""

from __future__ import annotations

from typing import Final

_LIMIT: Final = 200


def safe_repr(value: object, limit: int = _LIMIT) -> str:
    """`repr(value)`, shortened to about `limit` characters; never raises."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ (or one returning a non-str)
        return f"<{_type_name(value)} object (its repr raised)>"
    if len(text) > limit:
        return f"{text[: limit - 3]}..."
    return text


def type_repr(value: type) -> str:
    """A class as it is written in code: `ValueError`, `Outer.InnerError`."""
    name = getattr(value, "__qualname__", None)
    return name if isinstance(name, str) else safe_repr(value)


def _type_name(value: object) -> str:
    try:
        return type(value).__name__
    except Exception:  # a metaclass can break anything
        return "unknown"
