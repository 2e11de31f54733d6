"""Saga data to and from JSON, for the durable saga log: pydantic, one cached adapter a class.

A durable saga writes its data after every committed step and reads it back on recovery, so a
data class whose values do not survive that trip would lose or corrupt data in the middle of a
recovery. `check_round_trip` finds out when the saga starts instead: it encodes the data,
decodes it and compares field by field, naming the first field that comes back different or
cannot be encoded at all. Every blob is written with `CODEC_VERSION`; a log written by a newer
codec is refused, never guessed at.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from spakky_saga._names import type_name
from spakky_saga._text import error_text, safe_repr
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaDataCodecError, SagaSignalTypeError

__all__ = [
    "CODEC_VERSION",
    "adapter_for",
    "check_round_trip",
    "decode",
    "encode",
    "resolve_type",
    "signal_adapter",
    "type_name",
]

CODEC_VERSION: Final = "pydantic-json/1"
"""Written next to every data blob; bump when the encoding changes incompatibly."""

_ADAPTERS: dict[type, TypeAdapter[Any]] = {}
_ADAPTERS_LOCK: Final = threading.Lock()
_TO_JSON: dict[type, Callable[..., bytes]] = {}
"""Each adapter's serializer, called directly: `encode` runs for every step of a durable
saga, and `TypeAdapter.dump_json` only forwards to it."""


def adapter_for(data_class: type[AbstractSagaData]) -> TypeAdapter[Any]:
    """The pydantic adapter of `data_class`, built once (building one costs milliseconds)."""
    adapter = _ADAPTERS.get(data_class)
    if adapter is None:
        with _ADAPTERS_LOCK:
            adapter = _ADAPTERS.get(data_class)
            if adapter is None:
                try:
                    adapter = TypeAdapter(data_class)
                except Exception as error:  # an unsupported field type
                    raise SagaDataCodecError(
                        data_class,
                        None,
                        f"pydantic cannot build a schema for it ({error_text(error)}); give "
                        "every field a type pydantic can serialize (or a pydantic-compatible "
                        "annotation such as Annotated[..., PlainSerializer(...)])",
                    ) from error
                _ADAPTERS[data_class] = adapter
    return adapter


def signal_adapter(signal_type: type) -> TypeAdapter[Any]:
    """The pydantic adapter of a signal type (a dataclass, a pydantic model...), built once;
    a type pydantic cannot validate raises `TypeError` saying so."""
    adapter = _ADAPTERS.get(signal_type)
    if adapter is None:
        try:
            adapter = TypeAdapter(signal_type)
        except Exception as error:
            raise TypeError(
                f"the signal type {signal_type.__qualname__} cannot be validated by pydantic "
                f"({error_text(error)}); use a dataclass or a pydantic model with typed fields"
            ) from error
        with _ADAPTERS_LOCK:
            _ADAPTERS.setdefault(signal_type, adapter)
    return adapter


def signal_from_json(signal_type: type, text: str, what: str = "the payload") -> Any:
    """A signal of `signal_type` read from JSON `text` (what `spakky-saga signal --json` and
    the console's signal form take), validated by pydantic as `engine.signal` stores it.
    Raises `SagaSignalTypeError` naming `what` was not valid and why."""
    try:
        return signal_adapter(signal_type).validate_json(text)
    except Exception as error:  # not JSON, not what the type holds, or not a pydantic type
        raise SagaSignalTypeError(
            f"{what} is not a valid {signal_type.__qualname__}: {error_text(error)}"
        ) from error


def resolve_type(name: str) -> type:
    """The saga-data class a `module:QualName` names, imported."""
    module_name, _, qualname = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise SagaDataCodecError(
            None,
            None,
            f'the saga log names data class "{name}", which cannot be imported '
            f"({error_text(error)}); make its module importable by the recovering process "
            "(installed, or on sys.path)",
        ) from error
    if not (isinstance(target, type) and issubclass(target, AbstractSagaData)):
        raise SagaDataCodecError(
            None, None, f'the saga log names "{name}" as its data class, but it is {target!r}'
        )
    return target


def encode(data: AbstractSagaData) -> str:
    """`data` as JSON text."""
    try:
        # No serializer warnings: a value of the wrong type is what check_round_trip reports,
        # naming the field, when the saga starts.
        to_json = _TO_JSON.get(type(data))
        if to_json is None:
            to_json = _TO_JSON[type(data)] = adapter_for(type(data)).serializer.to_json
        return to_json(data, warnings=False).decode()
    except PydanticSerializationError as error:
        raise SagaDataCodecError(type(data), _failing_field(data), error_text(error)) from error


def decode(data_class: type[AbstractSagaData], text: str) -> AbstractSagaData:
    """The data `text` holds, validated against `data_class`."""
    try:
        value = adapter_for(data_class).validate_json(text)
    except ValidationError as error:
        location = error.errors()[0].get("loc", ()) if error.errors() else ()
        field = str(location[0]) if location else None
        raise SagaDataCodecError(
            data_class,
            field,
            f"the stored data no longer validates ({error.error_count()} error(s): "
            f"{error.errors()[0].get('msg', '') if error.errors() else ''}); was the data "
            "class changed while sagas were unfinished?",
        ) from error
    if not isinstance(value, AbstractSagaData):  # pragma: no cover - the adapter's type
        raise SagaDataCodecError(data_class, None, f"decoded {safe_repr(value)}")
    return value


def check_round_trip(data: AbstractSagaData) -> str:
    """Encode `data`, decode it and compare every field; returns the JSON text.

    Raises SagaDataCodecError naming the first field that cannot be encoded or that comes
    back different, before the saga runs any step.
    """
    text = encode(data)
    back = decode(type(data), text)
    for field in dataclasses.fields(data):
        before, after = getattr(data, field.name), getattr(back, field.name)
        try:
            same = before == after
        except Exception:  # a hostile __eq__
            same = False
        if not same:
            raise SagaDataCodecError(
                type(data),
                field.name,
                f"its value {safe_repr(before)} comes back from JSON as {safe_repr(after)}; "
                "use a type that round-trips through pydantic (for example tuple instead of "
                "a custom class, or add a pydantic serializer)",
            )
    return text


def _failing_field(data: AbstractSagaData) -> str | None:
    """The first field whose value alone cannot be serialized (for the error message)."""
    for field in dataclasses.fields(data):
        try:
            TypeAdapter(Any).dump_json(getattr(data, field.name))
        except Exception:
            return field.name
    return None
