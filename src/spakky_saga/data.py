"""What a saga carries from step to step: immutable data with an identity.

Subclasses are frozen, keyword-only dataclasses automatically (the quick start's plain
`class OrderSagaData(AbstractSagaData): order_id: int` just works), and type checkers know it
through `dataclass_transform`. Writing spakky's `@immutable` above a subclass keeps working.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field
from typing import TYPE_CHECKING, Any, dataclass_transform
from uuid import UUID, uuid4

from spakky.domain.models.base import AbstractDomainModel

_DATACLASS_OPTIONS: dict[str, Any] = {"frozen": True, "kw_only": True, "eq": False}


@dataclass_transform(
    kw_only_default=True, frozen_default=True, eq_default=False, field_specifiers=(field,)
)
class _FrozenDataModel(AbstractDomainModel):
    """Makes every subclass a frozen keyword dataclass the moment it is defined."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(**_DATACLASS_OPTIONS)(cls)
        # The generated frozen __setattr__/__delattr__ are dropped in favour of the
        # always-raising ones below, so applying @immutable again later does not hit
        # dataclasses' "cannot overwrite attribute" check.
        for name in ("__setattr__", "__delattr__"):
            if name in cls.__dict__:
                delattr(cls, name)

    if not TYPE_CHECKING:  # pragma: no branch - always true at run time
        # Hidden from type checkers: a visible __setattr__ would make them accept assigning
        # any attribute (`data.typo = 1`); without it they apply the frozen-dataclass rules.

        def __setattr__(self, name: str, value: object) -> None:
            raise FrozenInstanceError(
                f'cannot assign to field "{name}": saga data is immutable; '
                "return a changed copy from the step instead (dataclasses.replace)"
            )

        def __delattr__(self, name: str) -> None:
            raise FrozenInstanceError(f'cannot delete field "{name}": saga data is immutable')


class AbstractSagaData(_FrozenDataModel):
    """Base of every saga's data: immutable, a domain model, with a fresh `saga_id` each."""

    saga_id: UUID = field(default_factory=uuid4)
    """Identifies one saga run's data; kept by `dataclasses.replace`, so it follows the run."""
