"""`spakky-saga resolve SAGA_ID retry|skip|compensate --app APP`: the decision on a saga whose
step escalated is stored with who made it (user@host), and the saga carries it out when an
engine resumes it; an unknown saga is "not found" (exit 3), a finished one a usage error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spakky_saga import RecoveryOutcome, SagaEventKind, SagaStatus
from tests import escalate_app
from tests.escalate_app import FLOW, Parcel

ROOT = Path(__file__).resolve().parent.parent


def resolve(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "spakky_saga",
            "resolve",
            *args,
            "--app",
            "tests.escalate_app:engine",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=os.environ | {"ESCALATE_APP_STORE": str(store)},
    )


async def test_resolve_stores_the_decision_with_who_made_it_and_the_saga_carries_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "sagas.db"
    monkeypatch.setenv("ESCALATE_APP_STORE", str(store))
    escalate_app.SHIPPED.clear()
    engine = escalate_app.engine()
    data = Parcel()
    waiting = await engine.run(FLOW, data, saga_name="shipment")

    decided = resolve(store, str(data.saga_id), "retry")
    unknown = resolve(store, "nope", "skip")
    report = await engine.recover()
    again = resolve(store, str(data.saga_id), "skip")

    assert waiting.status is SagaStatus.WAITING
    assert decided.returncode == 0, decided.stderr
    assert f"{data.saga_id}: decision 'retry' by " in decided.stdout
    assert unknown.returncode == 3
    assert "there is no saga nope" in unknown.stderr
    assert [s.outcome for s in report.sagas] == [RecoveryOutcome.COMPLETED]
    assert escalate_app.SHIPPED == [0, 1]  # failed once, retried by the decision
    assert again.returncode == 2
    assert "is COMPLETED" in again.stderr
    assert engine.store is not None
    record = await engine.store.load(str(data.saga_id))
    assert record is not None
    [entry] = [e for e in record.events if e.kind == SagaEventKind.SIGNAL_RECEIVED.value]
    decision = json.loads(entry.data or "{}")
    assert decision["resolution"] == "retry"
    assert "@" in decision["by"]
    await engine.aclose()
