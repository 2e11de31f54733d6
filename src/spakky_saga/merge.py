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
from collections.abc import Sequence
from typing import Any, Final

from spakky_saga.data import AbstractSagaData, saga_data_fields
from spakky_saga.errors import SagaMergeResultError, SagaParallelMergeConflictError
from spakky_saga.flow import MergeFn, callable_name
from spakky_saga.plan import GroupNode, StepNode

logger: Final = logging.getLogger("spakky_saga.merge")

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
    its input value, and when the group's custom merge fails too the input data is kept.
    """
    if group.merge is None:
        return _merge_fields(group.members, data, results)[0]
    try:
        return _custom_merge(group, group.merge, data, results)
    except Exception as error:
        logger.warning(
            "parallel group %s failed and its merge function raised %r on the committed "
            "members' results; compensations see the group's input data",
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


def _merge_fields(
    members: tuple[StepNode, ...], data: AbstractSagaData, results: Sequence[Any]
) -> tuple[AbstractSagaData, list[SagaParallelMergeConflictError]]:
    """Field-by-field merge; returns the merged data (conflicting fields keep their input
    value) and one error per conflicting field."""
    cls = data.__class__
    fields = saga_data_fields(data)
    inputs = [getattr(data, name) for name in fields]
    writes: _Writes = {}
    subclassed: list[tuple[str, AbstractSagaData]] = []
    for member, out in zip(members, results, strict=True):
        if out is None or out is data:
            continue
        if out.__class__ is not cls:
            subclassed.append((member.name, out))
        for name, old in zip(fields, inputs, strict=True):
            new = getattr(out, name)
            if new is old or new == old:
                continue
            written = writes.get(name)
            if written is None:
                writes[name] = [(member.name, new)]
            else:
                written.append((member.name, new))
    conflicts: list[SagaParallelMergeConflictError] = []
    base = data
    if subclassed:
        base = _most_specific(data, subclassed, conflicts)
    if not writes:
        return base, conflicts
    values: dict[str, Any] = {}
    for name, written in writes.items():
        first = written[0][1]
        for _, value in written[1:]:
            if not (value is first or value == first):
                conflicts.append(_conflict(name, written))
                values[name] = getattr(data, name)
                break
        else:
            values[name] = first
    if base is not data and all(getattr(base, name) is v for name, v in values.items()):
        return base, conflicts  # the subclass output already holds every merged value
    return dataclasses.replace(base, **values), conflicts


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
    for name in saga_data_fields(base)[len(saga_data_fields(data)) :]:
        written = [(member, getattr(out, name)) for member, out in subclassed if hasattr(out, name)]
        first = written[0][1]
        if any(not (value is first or value == first) for _, value in written[1:]):
            conflicts.append(_conflict(name, written))
    return base


def _conflict(field: str, written: list[tuple[str, Any]]) -> SagaParallelMergeConflictError:
    return SagaParallelMergeConflictError(
        field, tuple(member for member, _ in written), tuple(value for _, value in written)
    )
