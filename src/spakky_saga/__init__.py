"""spakky_saga: typed saga orchestration for the Spakky framework.

Declare a saga as a class (`@Saga()`, `AbstractSaga[Data]`, `@saga_step` methods), compose
its flow with `>>` (compensation), `&` (parallel) and `|` (error strategy), and run it:
committed steps are compensated in reverse on failure and a `SagaResult` is returned.
"""

import logging
from typing import TYPE_CHECKING

from spakky_saga.audit import AuditEntry
from spakky_saga.builders import parallel, pivot, saga_flow, step
from spakky_saga.console_store import EngineNode, SagaConsoleStore
from spakky_saga.context import StepContext, current_step
from spakky_saga.data import AbstractSagaData
from spakky_saga.descriptor import SagaStepMethod, saga_step
from spakky_saga.engine import SagaEngine, run_saga_flow
from spakky_saga.errors import (
    AbstractSpakkySagaError,
    SagaAlreadyStartedError,
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaDataCodecError,
    SagaEngineConfigurationError,
    SagaEngineNotConnectedError,
    SagaFlowChangedError,
    SagaFlowDefinitionError,
    SagaFlowOperatorError,
    SagaInterruptedError,
    SagaLeaseLostError,
    SagaListenerWarning,
    SagaMergeResultError,
    SagaNotRegisteredError,
    SagaNotRetriableAfterPivotError,
    SagaParallelMergeConflictError,
    SagaPivotError,
    SagaPivotMemberError,
    SagaRecoveryError,
    SagaResolutionError,
    SagaRollbackInterruptedWarning,
    SagaSchemaVersionError,
    SagaSecondPivotError,
    SagaSignalConflictError,
    SagaSignalError,
    SagaSignalTargetError,
    SagaSignalTypeError,
    SagaStepCancelledError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaStoreError,
    SagaTimeoutError,
    SagaUncompensatedBeforePivotError,
    SagaWaitDefinitionError,
    SagaWaitTimeoutError,
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
from spakky_saga.query import (
    PageCursor,
    SagaPage,
    SagaQuery,
    SagaQueryError,
    SagaSort,
)
from spakky_saga.recovery import RecoveredSaga, RecoveryOutcome, RecoveryPolicy, RecoveryReport
from spakky_saga.result import SagaResult, StepRecord
from spakky_saga.saga import AbstractSaga, Saga
from spakky_saga.signals import SignalReceipt
from spakky_saga.spakky_plugin import PLUGIN_NAME
from spakky_saga.status import SagaStatus, StepStatus
from spakky_saga.store import (
    SagaStore,
    SagaStoreConnectionError,
    SagaStoreDamagedError,
    SagaStoreLocationError,
    SagaStoreNotFoundError,
    SignalStore,
    StoredSignal,
    StoredStatus,
    WakingStore,
)
from spakky_saga.stores.memory import InMemorySagaStore
from spakky_saga.stores.postgres import PostgresSagaStore
from spakky_saga.stores.sqlite import SqliteSagaStore
from spakky_saga.strategy import (
    Compensate,
    Decision,
    ErrorStrategy,
    Escalate,
    ExponentialBackoff,
    FailedAttempt,
    Retry,
    Skip,
    Verdict,
)
from spakky_saga.waits import Resolution, SagaWait, sleep, sleep_until, wait_for

_SagaStepDescriptor = SagaStepMethod
"""The documented package's name for what `@saga_step` returns, for code (and tests) that
import it: `from spakky_saga import _SagaStepDescriptor`."""

if TYPE_CHECKING:
    from spakky_saga.otel import SagaTelemetryListener as SagaTelemetryListener

__version__ = "0.1.0"

# A library never configures logging, but must not fall back to printing on stderr.
logging.getLogger("spakky_saga").addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    """`SagaTelemetryListener`, imported on first use: it needs the `otel` extra, and importing
    spakky_saga must not import opentelemetry (so it is not in `__all__` either)."""
    if name == "SagaTelemetryListener":
        from spakky_saga.otel import SagaTelemetryListener  # noqa: PLC0415 - optional extra

        return SagaTelemetryListener
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PLUGIN_NAME",
    "AbstractSaga",
    "AbstractSagaData",
    "AbstractSpakkySagaError",
    "ActionFn",
    "AuditEntry",
    "Compensate",
    "CompensateFn",
    "CompensationOrder",
    "Decision",
    "EngineNode",
    "ErrorStrategy",
    "Escalate",
    "ExponentialBackoff",
    "FailedAttempt",
    "FlowItem",
    "InMemorySagaStore",
    "MergeFn",
    "PageCursor",
    "Parallel",
    "PostgresSagaStore",
    "RecoveredSaga",
    "RecoveryOutcome",
    "RecoveryPolicy",
    "RecoveryReport",
    "Resolution",
    "Retry",
    "Saga",
    "SagaAlreadyStartedError",
    "SagaCompensationFailedError",
    "SagaCompensationInterruptedError",
    "SagaConsoleStore",
    "SagaDataCodecError",
    "SagaDataT",
    "SagaEngine",
    "SagaEngineConfigurationError",
    "SagaEngineNotConnectedError",
    "SagaEvent",
    "SagaEventKind",
    "SagaFlow",
    "SagaFlowChangedError",
    "SagaFlowDefinitionError",
    "SagaFlowOperatorError",
    "SagaInterruptedError",
    "SagaLeaseLostError",
    "SagaListener",
    "SagaListenerWarning",
    "SagaLogListener",
    "SagaMergeResultError",
    "SagaNotRegisteredError",
    "SagaNotRetriableAfterPivotError",
    "SagaPage",
    "SagaParallelMergeConflictError",
    "SagaPivotError",
    "SagaPivotMemberError",
    "SagaQuery",
    "SagaQueryError",
    "SagaRecoveryError",
    "SagaResolutionError",
    "SagaResult",
    "SagaRollbackInterruptedWarning",
    "SagaSchemaVersionError",
    "SagaSecondPivotError",
    "SagaSignalConflictError",
    "SagaSignalError",
    "SagaSignalTargetError",
    "SagaSignalTypeError",
    "SagaSort",
    "SagaStatus",
    "SagaStep",
    "SagaStepCancelledError",
    "SagaStepMethod",
    "SagaStepResultError",
    "SagaStepTimeoutError",
    "SagaStore",
    "SagaStoreConnectionError",
    "SagaStoreDamagedError",
    "SagaStoreError",
    "SagaStoreLocationError",
    "SagaStoreNotFoundError",
    "SagaTimeoutError",
    "SagaUncompensatedBeforePivotError",
    "SagaWait",
    "SagaWaitDefinitionError",
    "SagaWaitTimeoutError",
    "SignalReceipt",
    "SignalStore",
    "Skip",
    "SqliteSagaStore",
    "StepContext",
    "StepRecord",
    "StepStatus",
    "StoredSignal",
    "StoredStatus",
    "Transaction",
    "Verdict",
    "WakingStore",
    "_SagaStepDescriptor",
    "current_step",
    "parallel",
    "pivot",
    "run_saga_flow",
    "saga_flow",
    "saga_step",
    "sleep",
    "sleep_until",
    "step",
    "wait_for",
]
