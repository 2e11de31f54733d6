"""Where an explorer's runs get their flow: a flow, a saga instance, or a function building
either (called once per run, so that every run starts from fresh services)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from spakky_saga._text import safe_repr
from spakky_saga.data import AbstractSagaData
from spakky_saga.flow import SagaFlow
from spakky_saga.result import ANONYMOUS
from spakky_saga.saga import AbstractSaga
from spakky_saga.testing._injection import Shape, Site, shape_of

type SagaSource[D: AbstractSagaData] = (
    SagaFlow[D] | AbstractSaga[D] | Callable[[], SagaFlow[D] | AbstractSaga[D]]
)
"""What an explorer explores: a flow, a saga instance, or a function building either
(called once per run, so that every run gets fresh services)."""


class Source[D: AbstractSagaData]:
    """Where each run's flow comes from, and the saga name it runs under. `explorer` names
    the caller in error messages (`explore_failures`, `explore_crashes`)."""

    def __init__(self, saga: SagaSource[D], saga_name: str | None, explorer: str) -> None:
        self.explorer = explorer
        self._factory: Callable[[], SagaFlow[D] | AbstractSaga[D]] | None = None
        if isinstance(saga, SagaFlow | AbstractSaga):
            subject: object = saga
        elif callable(saga):
            self._factory = saga
            subject = saga()
        else:
            subject = saga
        flow, self._subject, name = self._flow_of(subject, f"{explorer}(saga)")
        self._flow = flow
        self.name = saga_name if saga_name is not None else name
        self.shape: Shape = shape_of(flow)

    @property
    def anonymous(self) -> bool:
        """Whether the runs have no saga name (a flow given without `saga_name`)."""
        return self.name == ANONYMOUS

    def next(self) -> tuple[SagaFlow[D], SagaFlow[D] | AbstractSaga[D]]:
        """The flow of the next run and where it came from: the same one each time, or the
        factory's new one."""
        if self._factory is None:
            return self._flow, self._subject
        made = self._factory()
        flow, subject, _ = self._flow_of(made, f"{self.explorer}(saga): the factory's result")
        shape = shape_of(flow)
        if [(s.key, s.name) for s in shape.sites] != [(s.key, s.name) for s in self.shape.sites]:
            raise ValueError(
                f"{self.explorer}(saga): the factory built a flow with other steps than its "
                f"first one ({_steps(shape.sites)} instead of {_steps(self.shape.sites)}); it "
                "must build the same saga every time"
            )
        return flow, subject

    @staticmethod
    def _flow_of(
        subject: object, where: str
    ) -> tuple[SagaFlow[D], SagaFlow[D] | AbstractSaga[D], str]:
        if isinstance(subject, AbstractSaga):
            saga: AbstractSaga[D] = subject
            return saga.cached_flow(), saga, type(saga).__name__
        if isinstance(subject, SagaFlow):
            flow: SagaFlow[D] = subject
            return flow, flow, ANONYMOUS
        raise TypeError(
            f"{where} is {safe_repr(subject)}; pass a SagaFlow, an AbstractSaga instance, or a "
            "function without arguments returning one of them"
        )


def _steps(sites: Iterable[Site]) -> str:
    return ", ".join(site.label for site in sites)
