"""How the library names a class in what it stores: `module:QualName` (data classes in the
saga log, signal types in the signals table). On its own, so that flow types (waits) can
name a signal type without importing the codec."""

from __future__ import annotations


def type_name(cls: type) -> str:
    """`module:QualName`, how the log names a data class or a signal type."""
    return f"{cls.__module__}:{cls.__qualname__}"
