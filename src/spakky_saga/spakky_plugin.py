"""The spakky integration: what `SpakkyApplication.load_plugins()` adds to an application
(see `spakky_saga.main.initialize`, the `spakky-saga` entry point of `spakky.plugins`).

`@Saga()` sagas get the container's `SagaEngine` from the container itself (see
`spakky_saga.saga.Saga`), so they run on it with or without the plugin. The plugin ties the
engines to the application's lifecycle: when the application stops, every `SagaEngine` its
container created is closed, so a saga kept past shutdown refuses new runs
(`SagaEngineNotConnectedError`) while runs already started finish. It also connects sagas
registered with a plain `@Pod()` instead of `@Saga()`.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from spakky.core.application.plugin import Plugin
from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.interfaces.aware.container_aware import IContainerAware
from spakky.core.pod.interfaces.container import IContainer
from spakky.core.pod.interfaces.post_processor import IPostProcessor
from spakky.core.service.interfaces.service import IAsyncService, IService

from spakky_saga.engine import SagaEngine
from spakky_saga.recovery import RecoveryReport
from spakky_saga.saga import AbstractSaga, Saga

logger = logging.getLogger("spakky_saga.spakky")

PLUGIN_NAME = Plugin(name="spakky-saga")
"""The plugin, for `SpakkyApplication.load_plugins(include={PLUGIN_NAME})`."""


@Pod()
class SagaEngineConnector(IPostProcessor, IContainerAware, IService):
    """Closes the engines the container created when the application stops, and connects
    `@Pod()`-registered sagas (which the `@Saga()` stereotype does not see) to the
    container's engine."""

    def __init__(self) -> None:
        self._container: IContainer | None = None
        self._engines: list[SagaEngine] = []

    def set_container(self, container: IContainer) -> None:
        self._container = container

    def post_process(self, pod: object) -> object:
        if isinstance(pod, SagaEngine):
            self._engines.append(pod)  # the container post-processes each pod it creates once
        elif (
            isinstance(pod, AbstractSaga)
            and not Saga.exists(type(pod))
            and self._container is not None
            and (engine := self._container.get_or_none(SagaEngine)) is not None
        ):
            pod.connect_engine(engine)
        return pod

    def set_stop_event(self, stop_event: threading.Event) -> None:
        """Nothing runs in the background, so there is nothing to signal."""

    def start(self) -> None:
        """Engines are collected as the container creates them; nothing to start."""

    def stop(self) -> None:
        for engine in self._engines:
            engine.close()

    @property
    def engines(self) -> tuple[SagaEngine, ...]:
        """The engines the container created, in order."""
        return tuple(self._engines)


@Pod()
class SagaRecoveryService(IAsyncService):
    """The spakky side of durable engines, on the application's async-service loop: when the
    application starts, it recovers what each engine built with `recover_on_start=True`
    left unfinished, then keeps recovering continuously (`SagaEngine.serve()`) for each
    engine built with `recover_every=`; when it stops, it lets the pass in progress finish
    and closes durable engines' stores.

    By then the container has created its sagas, which registered their flows with their
    engine; a saga refused by recovery (unknown name, changed flow) is logged and left for an
    operator (`spakky-saga recover`).
    """

    def __init__(self, connector: SagaEngineConnector) -> None:
        self._connector = connector
        self._stop = asyncio.Event()
        self._serving: list[asyncio.Task[None]] = []

    def set_stop_event(self, stop_event: asyncio.Event) -> None:
        """Spakky's stop signal: the background recovery passes end when it is set."""
        self._stop = stop_event

    async def start_async(self) -> None:
        self._stop.clear()
        for engine in self._connector.engines:
            if engine.store is None:
                continue
            if engine.recover_on_start:
                _log_report(engine, await engine.recover())
            if engine.recover_every is not None:
                self._serving.append(
                    asyncio.get_running_loop().create_task(
                        engine.serve(every=engine.recover_every, stop=self._stop),
                        name=f"spakky-saga recovery service {engine.owner}",
                    )
                )

    async def stop_async(self) -> None:
        self._stop.set()
        serving, self._serving = self._serving, []
        for task in serving:
            try:
                await task  # the pass in progress finishes: a drain, not a cut
            except Exception:  # serve() logs its passes' errors; this one ended it
                logger.exception("[saga=- status=recovery_service_failed]")
        for engine in self._connector.engines:
            if engine.store is None:
                continue
            try:
                await engine.aclose()
            except Exception:  # a store opened on another loop: its owner closes it
                logger.warning(
                    "[saga=- status=store_close_failed]",
                    exc_info=True,
                    extra={"saga_engine": engine.owner},
                )


def _log_report(engine: SagaEngine, report: RecoveryReport) -> None:
    logger.info(
        "[saga=- status=recovered sagas=%d refused=%d]",
        len(report),
        len(report.refused),
        extra={"saga_engine": engine.owner},
    )
    for refused in report.refused:
        logger.error(
            "[saga=%s status=recovery_refused error=%s]",
            refused.saga_name,
            type(refused.error).__name__,
            extra={"saga_id": refused.saga_id, "saga_error_message": str(refused.error)},
        )
