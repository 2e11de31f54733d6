"""How a parallel group's results become one saga data: the default field-by-field merge.

Every member gets the same input. A member that returns data contributes the fields it
changed relative to that input (a member returning None, or the input itself, changes
nothing). A field changed by one member takes its value; a field changed by several members
to equal values takes that value; a field changed to different values is a conflict, and the
group fails with SagaParallelMergeConflictError naming the field and every member that wrote
it. A member may return a subclass of the data: the merged data is then of the most specific
class returned, keeping that member's extra fields. A custom `merge=` function replaces the
rule: it gets the input and the members' results in declaration order.

`merge_committed` is the forgiving variant the engine uses when a group failed: it merges
what the committed members changed so that their compensations see it, and never raises.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final
from weakref import WeakKeyDictionary

from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaMergeResultError, SagaParallelMergeConflictError
from spakky_saga.flow import MergeFn, callable_name
from spakky_saga.plan import GroupNode, StepNode

logger: Final = logging.getLogger("spakky_saga.merge")

_IDENTITY: Final = "saga_id"
"""Never merged: the group's output keeps the input's saga id, even from members that built
fresh data with the constructor (which draws a new id)."""

_CLASS: Final = "__class__"
"""The pseudo-field a conflict names when members returned unrelated subclasses."""

type _Writes = dict[str, list[tuple[str, Any]]]
"""Field name -> (member name, value) of every member that changed it, in declaration order."""


def merge_results(
    group: GroupNode, data: AbstractSagaData, results: Sequence[Any]
) -> AbstractSagaData:
    """The group's output: its custom merge, or the field-by-field merge.

    `results` holds each member's result in declaration order (None for members that
    returned nothing or were skipped). Raises SagaParallelMergeConflictError for a conflicting
    field (an ExceptionGroup of them when several fields conflict), or SagaMergeResultError
    when a custom merge returns something other than the saga data.
    """
    if group.merge is not None:
        return _custom_merge(group, group.merge, data, results)
    merged, conflicts = _merge_fields(group.members, data, results)
    if conflicts:
        if len(conflicts) == 1:
            raise conflicts[0]
        raise ExceptionGroup(
            f"{len(conflicts)} fields conflict in parallel group {group.name}", conflicts
        )
    return merged


def merge_committed(
    group: GroupNode, data: AbstractSagaData, results: Sequence[Any]
) -> AbstractSagaData:
    """The data a failed group leaves behind, for its compensations and the saga's result.

    `results` holds None for members that failed. Never raises: a conflicting field keeps
    its input value, and when merging fails anyway (a custom merge that raises, or data
    whose `__post_init__` rejects the combination) the input data is kept.
    """
    try:
        if group.merge is None:
            return _merge_fields(group.members, data, results)[0]
        return _custom_merge(group, group.merge, data, results)
    except Exception as error:  # e.g. the data's __post_init__ rejects the combination
        logger.warning(
            "parallel group %s failed, and merging its committed members' results raised "
            "%r; compensations see the group's input data",
            group.name,
            error,
        )
        return data


def _custom_merge(
    group: GroupNode, merge: MergeFn[Any], data: AbstractSagaData, results: Sequence[Any]
) -> AbstractSagaData:
    merged = merge(data, tuple(results))
    if merged.__class__ is data.__class__ or isinstance(merged, data.__class__):
        return merged
    error = SagaMergeResultError(group.name, callable_name(merge), merged, data.__class__)
    if inspect.iscoroutine(merged):
        merged.close()  # never awaited: close it so Python does not warn about it later
    raise error


@dataclass(frozen=True, slots=True)
class _Shape:
    """What merging needs to know about a saga data class, worked out once per class."""

    fields: tuple[str, ...]
    values_of: Callable[[object], tuple[Any, ...]]
    """All field values of an instance as one tuple, in field order (one C-level call)."""
    plain: bool
    """No `__post_init__` and only init fields: a merged instance is its fields' values, so it
    is built from them directly rather than through `dataclasses.replace` (faster)."""
    init_fields: frozenset[str]
    field_names: frozenset[str]


_SHAPES: WeakKeyDictionary[type, _Shape] = WeakKeyDictionary()


def _shape(cls: type[AbstractSagaData]) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        init_fields = frozenset(f.name for f in fields if f.init)
        plain = (
            getattr(cls, "__post_init__", None) is None
            and len(init_fields) == len(names)
            and cls.__dictoffset__ != 0
        )
        # attrgetter of one name returns the value, not a 1-tuple: repeat it (zip stops at
        # the shorter side, so the extra value is never looked at).
        getter = attrgetter(*names) if len(names) > 1 else attrgetter(names[0], names[0])
        shape = _SHAPES[cls] = _Shape(names, getter, plain, init_fields, frozenset(names))
    return shape


def _merge_fields(
    members: tuple[StepNode, ...], data: AbstractSagaData, results: Sequence[Any]
) -> tuple[AbstractSagaData, list[SagaParallelMergeConflictError]]:
    """Field-by-field merge; returns the merged data (conflicting fields keep their input
    value) and one error per conflicting field."""
    shape = _shape(data.__class__)
    if shape.plain:
        merged = _merge_plain(shape, data, results)
        if merged is not None:
            return merged, []
    return _merge_general(shape, members, data, results)


def _merge_plain(
    shape: _Shape, data: AbstractSagaData, results: Sequence[Any]
) -> AbstractSagaData | None:
    """The common case, fast: outputs of the input's own (plain) class that do not conflict.

    Reads fields straight from `__dict__` (faster than attribute access) and keeps no
    record of who wrote what. Returns None, to take the general path, on anything else: a
    subclass output, a conflict (which the general path reports with every writer), or an
    attribute the input lacks.
    """
    cls = data.__class__
    state = data.__dict__
    field_names = shape.field_names
    merged: dict[str, Any] = {}
    setdefault = merged.setdefault
    try:
        for out in results:
            if out is None or out is data:
                continue
            if out.__class__ is not cls:
                return None
            # Only a field holding another object can have changed; of those, an equal copy
            # of the input's value is no change.
            for name, new in [(n, v) for n, v in out.__dict__.items() if v is not state[n]]:
                if name not in field_names or name == _IDENTITY or new == state[name]:
                    continue
                first = setdefault(name, new)
                if not (first is new or first == new):
                    return None
    except KeyError:
        return None
    return _with_values(data, merged) if merged else data


def _merge_general(
    shape: _Shape, members: tuple[StepNode, ...], data: AbstractSagaData, results: Sequence[Any]
) -> tuple[AbstractSagaData, list[SagaParallelMergeConflictError]]:
    """Every case: records each member's writes to report conflicts with all writers, and
    handles subclass outputs and classes with `__post_init__` or non-init fields."""
    fields = shape.fields
    init_fields = shape.init_fields
    inputs = shape.values_of(data)
    writes: _Writes = {}
    subclassed: list[tuple[str, AbstractSagaData]] = []
    for member, out in zip(members, results, strict=True):
        if out is None or out is data:
            continue
        if out.__class__ is not data.__class__:
            subclassed.append((member.name, out))
        for name, new, old in zip(fields, shape.values_of(out), inputs, strict=False):
            if new is old or name == _IDENTITY or name not in init_fields or new == old:
                continue  # unchanged, the saga id, or derived (init=False: __post_init__)
            written = writes.get(name)
            if written is None:
                writes[name] = [(member.name, new)]
            else:
                written.append((member.name, new))
    conflicts: list[SagaParallelMergeConflictError] = []
    base = data
    if subclassed:
        base = _most_specific(data, subclassed, conflicts)
    merged: dict[str, Any] = {}
    if base is not data and getattr(base, _IDENTITY) != getattr(data, _IDENTITY):
        merged[_IDENTITY] = getattr(data, _IDENTITY)
    if not writes:
        return (_with_values(base, merged) if merged else base), conflicts
    for name, written in writes.items():
        first = written[0][1]
        for _, value in written[1:]:
            if not (value is first or value == first):
                conflicts.append(_conflict(name, written))
                merged[name] = getattr(data, name)
                break
        else:
            merged[name] = first
    return _with_values(base, merged), conflicts


def _with_values(base: AbstractSagaData, changes: dict[str, Any]) -> AbstractSagaData:
    """`base` with `changes` applied: what `dataclasses.replace` returns, built without
    running `__init__` again when the class is plain (about twice as fast)."""
    cls = base.__class__
    shape = _shape(cls)
    if not shape.plain:
        return dataclasses.replace(base, **changes)
    state = base.__dict__
    if len(state) != len(shape.fields):  # e.g. a cached_property: copy the fields only
        state = dict(zip(shape.fields, shape.values_of(base), strict=False))
    merged = object.__new__(cls)
    merged_state = merged.__dict__
    merged_state.update(state)
    merged_state.update(changes)
    return merged


def _most_specific(
    data: AbstractSagaData,
    subclassed: list[tuple[str, AbstractSagaData]],
    conflicts: list[SagaParallelMergeConflictError],
) -> AbstractSagaData:
    """The output of the most specific class returned (the base of the merged data).

    Extra fields (those the input's class lacks) are compared between the members that
    returned them. Unrelated subclasses conflict on the pseudo-field `__class__`, and the
    merge falls back to the input's class.
    """
    base = data
    for _, out in subclassed:
        if isinstance(out, base.__class__):
            base = out
        elif not isinstance(base, out.__class__):
            conflicts.append(
                SagaParallelMergeConflictError(
                    _CLASS,
                    tuple(name for name, _ in subclassed),
                    tuple(type(out).__name__ for _, out in subclassed),
                )
            )
            return data
    if len(subclassed) == 1:
        return base
    for name in _shape(base.__class__).fields[len(_shape(data.__class__).fields) :]:
        written = [(member, getattr(out, name)) for member, out in subclassed if hasattr(out, name)]
        first = written[0][1]
        if any(not (value is first or value == first) for _, value in written[1:]):
            conflicts.append(_conflict(name, written))
    return base


def _conflict(field: str, written: list[tuple[str, Any]]) -> SagaParallelMergeConflictError:
    return SagaParallelMergeConflictError(
        field, tuple(member for member, _ in written), tuple(value for _, value in written)
    )
