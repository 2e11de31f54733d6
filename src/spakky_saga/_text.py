"""Text of user objects that cannot break the engine's own messages.

A step's exception or data may have a `__repr__` or `__str__` that raises. Every place the
engine, an error or a report formats a user object goes through these, so a broken repr
costs a placeholder, never the real error.
"""

from __future__ import annotations

import traceback

_MAX_REPR = 200
"""Longer reprs are cut: a log line or error message is not the place for a whole payload."""


def safe_repr(value: object, limit: int = _MAX_REPR) -> str:
    """`repr(value)`, shortened to about `limit` characters, or a placeholder naming its type
    when repr raises."""
    try:
        text = repr(value)
    except Exception as error:  # a hostile __repr__ must not replace the real failure
        return f"<{_type_name(value)} object (repr raised {_type_name(error)})>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_repr(value: type) -> str:
    """A class as it is written in code: `ValueError`, `Outer.InnerError`."""
    name = getattr(value, "__qualname__", None)
    return name if isinstance(name, str) else safe_repr(value)


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


def traceback_text(error: BaseException, limit: int) -> str | None:
    """`error`'s traceback as Python prints it (chained causes included), its last `limit`
    characters (where the error was raised) when longer, or None when it has none or
    formatting it raises."""
    if error.__traceback__ is None:
        return None
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:  # a hostile __str__ (or a broken frame): the error itself is enough
        return None
    return text if len(text) <= limit else "...\n" + text[len(text) - limit + 4 :]


def _type_name(value: object) -> str:
    try:
        return type(value).__name__
    except Exception:  # pragma: no cover - only a metaclass could break this
        return "object"
