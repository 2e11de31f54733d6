"""Which flow a saga name means: what a durable engine needs to recover sagas by name.

A durable run registers its flow under its saga name (one name must always mean one flow);
`@Saga()` classes connected to a durable engine register under their class name; a process
that only recovers registers at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spakky_saga._text import safe_repr
from spakky_saga.errors import SagaFlowDefinitionError, SagaRecoveryError
from spakky_saga.flow import SagaFlow
from spakky_saga.plan import ExecutionPlan, plan_for
from spakky_saga.recovery import RecoveryPolicy
from spakky_saga.result import ANONYMOUS

type FlowSource = SagaFlow[Any] | Callable[[], SagaFlow[Any]]
"""A flow, or a function building it (called when recovery needs it)."""


@dataclass(frozen=True, slots=True)
class Registration:
    """A saga name the engine can recover: where its flow comes from, and how."""

    name: str
    source: FlowSource
    recovery: RecoveryPolicy | None

    def plan(self) -> ExecutionPlan:
        flow = self.source if isinstance(self.source, SagaFlow) else self.source()
        if not isinstance(flow, SagaFlow):
            raise SagaRecoveryError(
                f'the flow registered as "{self.name}" is {safe_repr(flow)}, not a SagaFlow'
            )
        return plan_for(flow)


class SagaRegistry:
    """Saga names and their flows."""

    __slots__ = ("_registrations",)

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}

    def __contains__(self, saga_name: object) -> bool:
        return saga_name in self._registrations

    def get(self, saga_name: str) -> Registration | None:
        return self._registrations.get(saga_name)

    def names(self) -> list[str]:
        return sorted(self._registrations)

    def register(
        self, saga_name: str, flow: FlowSource, recovery: RecoveryPolicy | None = None
    ) -> Registration:
        """Register (or replace) `saga_name`; checked here, so a mistake shows at start-up."""
        if not isinstance(saga_name, str) or not saga_name or saga_name == ANONYMOUS:
            raise SagaFlowDefinitionError(
                f"SagaEngine.register({saga_name!r}, ...): a durable saga needs a name of its "
                "own (a non-empty str, not <anonymous>): recovery finds its flow by name"
            )
        if not (isinstance(flow, SagaFlow) or callable(flow)):
            raise SagaFlowDefinitionError(
                f'SagaEngine.register("{saga_name}", {safe_repr(flow)}): pass the SagaFlow, or '
                "a function returning it"
            )
        if recovery is not None and not isinstance(recovery, RecoveryPolicy):
            raise SagaFlowDefinitionError(
                f'SagaEngine.register("{saga_name}", recovery={recovery!r}): must be '
                "RecoveryPolicy.COMPENSATE or RecoveryPolicy.RESUME"
            )
        registration = self._registrations[saga_name] = Registration(saga_name, flow, recovery)
        return registration
