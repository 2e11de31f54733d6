"""How a parallel group's results become one saga data: the default field-by-field merge.

Every member gets the same input. A member that returns data contributes the fields it
changed relative to that input; fields changed by several members must agree, or the group
fails with SagaParallelMergeConflictError. A custom `merge=` function replaces the rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spakky_saga.data import AbstractSagaData, saga_data_fields
from spakky_saga.errors import SagaParallelMergeConflictError, SagaStepResultError
from spakky_saga.plan import GroupNode


def merge_results(group: GroupNode, data: AbstractSagaData, results: list[Any]) -> AbstractSagaData:
    """Combine members' results: the custom merge, or field-by-field without conflicts."""
    if group.merge is not None:
        merged = group.merge(data, tuple(results))
        if not isinstance(merged, data.__class__):
            raise SagaStepResultError(f"merge of {group.name}", merged, data.__class__)
        return merged
    changes: dict[str, tuple[Any, list[str], list[Any]]] = {}
    base = data
    fields = saga_data_fields(data)
    for member, out in zip(group.members, results, strict=True):
        if out is None or out is data:
            continue
        if out.__class__ is not base.__class__:
            if isinstance(out, base.__class__):
                base = out  # a more specific type: keep its extra fields
            elif not isinstance(base, out.__class__):
                raise SagaParallelMergeConflictError(
                    "__class__", (member.name,), (type(out).__name__,)
                )
        for name in fields:
            new = getattr(out, name)
            old = getattr(data, name)
            if new is old or new == old:
                continue
            seen = changes.get(name)
            if seen is None:
                changes[name] = (new, [member.name], [new])
            else:
                seen[1].append(member.name)
                seen[2].append(new)
                if not (new is seen[0] or new == seen[0]):
                    raise SagaParallelMergeConflictError(name, tuple(seen[1]), tuple(seen[2]))
    if not changes and base is data:
        return data
    return dataclasses.replace(base, **{name: change[0] for name, change in changes.items()})
