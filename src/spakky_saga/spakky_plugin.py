"""The spakky integration: what `SpakkyApplication.load_plugins()` adds to an application
(see `spakky_saga.main.initialize`, the `spakky-saga` entry point of `spakky.plugins`).

It registers a post-processor that connects every saga the container creates to the
container's `SagaEngine`, when the application registers one (to configure compensation
timeouts, or, later, a durable log); otherwise sagas use the default engine. When the
application stops, the engines it connected are closed, so a saga kept past shutdown refuses
new runs (`SagaEngineNotConnectedError`) while runs already started finish.
"""

from __future__ import annotations

import threading

from spakky.core.application.plugin import Plugin
from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.interfaces.aware.container_aware import IContainerAware
from spakky.core.pod.interfaces.container import IContainer
from spakky.core.pod.interfaces.post_processor import IPostProcessor
from spakky.core.service.interfaces.service import IService

from spakky_saga.engine import SagaEngine
from spakky_saga.saga import AbstractSaga

PLUGIN_NAME = Plugin(name="spakky-saga")
"""The plugin, for `SpakkyApplication.load_plugins(include={PLUGIN_NAME})`."""


@Pod()
class SagaEngineConnector(IPostProcessor, IContainerAware, IService):
    """Connects container-made sagas to the container's SagaEngine, if there is one, and
    closes that engine when the application stops."""

    def __init__(self) -> None:
        self._container: IContainer | None = None
        self._engines: list[SagaEngine] = []

    def set_container(self, container: IContainer) -> None:
        self._container = container

    def post_process(self, pod: object) -> object:
        if isinstance(pod, AbstractSaga) and self._container is not None:
            engine = self._container.get_or_none(SagaEngine)
            if engine is not None:
                pod.connect_engine(engine)
                if engine not in self._engines:
                    self._engines.append(engine)
        return pod

    def set_stop_event(self, stop_event: threading.Event) -> None:
        """Nothing runs in the background, so there is nothing to signal."""

    def start(self) -> None:
        """Sagas are connected as the container creates them; nothing to start."""

    def stop(self) -> None:
        for engine in self._engines:
            engine.close()

