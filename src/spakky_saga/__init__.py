"""spakky_saga: typed saga orchestration for the Spakky framework.

Declare a saga as a class (`@Saga()`, `AbstractSaga[Data]`, `@saga_step` methods), compose
its flow with `>>` (compensation), `&` (parallel) and `|` (error strategy), and run it:
committed steps are compensated in reverse on failure and a `SagaResult` is returned.
"""

import logging

from spakky_saga.builders import parallel, saga_flow, step
from spakky_saga.data import AbstractSagaData
from spakky_saga.descriptor import SagaStepMethod, saga_step
from spakky_saga.engine import SagaEngine, run_saga_flow
from spakky_saga.errors import (
    AbstractSpakkySagaError,
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaEngineNotConnectedError,
    SagaFlowDefinitionError,
    SagaListenerWarning,
    SagaMergeResultError,
    SagaParallelMergeConflictError,
    SagaStepCancelledError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaTimeoutError,
)
from spakky_saga.events import SagaEvent, SagaEventKind
from spakky_saga.flow import (
    ActionFn,
    CompensateFn,
    CompensationOrder,
    FlowItem,
    MergeFn,
    Parallel,
    SagaDataT,
    SagaFlow,
    SagaStep,
    Transaction,
)
from spakky_saga.listeners import SagaListener
from spakky_saga.logs import SagaLogListener
from spakky_saga.result import SagaResult, SagaStatus, StepRecord, StepStatus
from spakky_saga.saga import AbstractSaga, Saga
from spakky_saga.spakky_plugin import PLUGIN_NAME
from spakky_saga.strategy import Compensate, ErrorStrategy, ExponentialBackoff, Retry, Skip

__version__ = "0.1.0"

# A library never configures logging, but must not fall back to printing on stderr.
logging.getLogger("spakky_saga").addHandler(logging.NullHandler())

__all__ = [
    "PLUGIN_NAME",
    "AbstractSaga",
    "AbstractSagaData",
    "AbstractSpakkySagaError",
    "ActionFn",
    "Compensate",
    "CompensateFn",
    "CompensationOrder",
    "ErrorStrategy",
    "ExponentialBackoff",
    "FlowItem",
    "MergeFn",
    "Parallel",
    "Retry",
    "Saga",
    "SagaCompensationFailedError",
    "SagaCompensationInterruptedError",
    "SagaDataT",
    "SagaEngine",
    "SagaEngineNotConnectedError",
    "SagaEvent",
    "SagaEventKind",
    "SagaFlow",
    "SagaFlowDefinitionError",
    "SagaListener",
    "SagaListenerWarning",
    "SagaLogListener",
    "SagaMergeResultError",
    "SagaParallelMergeConflictError",
    "SagaResult",
    "SagaStatus",
    "SagaStep",
    "SagaStepCancelledError",
    "SagaStepMethod",
    "SagaStepResultError",
    "SagaStepTimeoutError",
    "SagaTimeoutError",
    "Skip",
    "StepRecord",
    "StepStatus",
    "Transaction",
    "parallel",
    "run_saga_flow",
    "saga_flow",
    "saga_step",
    "step",
]
