"""Text of user objects that cannot break the engine's own messages.

A step's exception or data may have a `__repr__` or `__str__` that raises. Every place the
engine, an error or a report formats a user object goes through these, so a broken repr
costs a placeholder, never the real error.
"""

from __future__ import annotations

_MAX_REPR = 500
"""Longer reprs are cut: a log line or error message is not the place for a whole payload."""


def safe_repr(value: object) -> str:
    """`repr(value)`, or a placeholder naming its type when repr raises."""
    try:
        text = repr(value)
    except Exception as error:  # a hostile __repr__ must not replace the real failure
        return f"<{_type_name(value)} object (repr raised {_type_name(error)})>"
    if not isinstance(text, str):  # pragma: no cover - repr() itself enforces str
        return f"<{_type_name(value)} object>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def safe_str(value: object) -> str:
    """`str(value)`, or a placeholder naming its type when str raises."""
    try:
        return str(value)
    except Exception as error:
        return f"<{_type_name(value)} object (str raised {_type_name(error)})>"


def error_text(error: BaseException) -> str:
    """`ErrorType: message` (just the type when the message is empty), never raising."""
    message = safe_str(error)
    name = _type_name(error)
    return f"{name}: {message}" if message else name


def _type_name(value: object) -> str:
    try:
        return type(value).__qualname__
    except Exception:  # pragma: no cover - only a metaclass could break this
        return "object"
