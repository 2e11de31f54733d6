"""The operations command, `spakky-saga`: list, show, recover, retry-compensation, with
exit codes and `--json` for scripts. Runs `main()` in-process on real SQLite stores (one
test runs the installed command), with flows from tests/cli_app.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spakky_saga import SqliteSagaStore
from spakky_saga.cli import ATTENTION, NOT_FOUND, OK, STORE_FAILED, USAGE, main, open_store
from tests import cli_app


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "sagas.db")
    monkeypatch.setenv(cli_app.STORE_VARIABLE, path)
    cli_app.LEDGER.clear()
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_every_saga_and_filters_by_status(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = asyncio.run(cli_app.run_one(fail=False))
    failed = asyncio.run(cli_app.run_one(fail=True))

    code, out, _ = run_cli(capsys, "list", "--store", f"sqlite:///{store_path}")
    assert code == OK
    assert done in out
    assert failed in out
    assert out.splitlines()[0].split() == [
        *("saga", "id", "name", "status", "updated", "owner"),
        *("failed", "step", "error"),
    ]

    code, out, _ = run_cli(capsys, "list", "--store", store_path, "--status", "FAILED", "--json")
    assert code == OK
    assert [(r["saga_id"], r["status"]) for r in json.loads(out)] == [(failed, "FAILED")]


def test_list_of_an_empty_store_says_so(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(cli_app.create_store())

    assert run_cli(capsys, "list", "--store", store_path)[:2] == (OK, "no sagas\n")


def test_show_prints_the_saga_and_its_timeline(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = asyncio.run(cli_app.run_one(fail=True))

    code, out, _ = run_cli(capsys, "show", failed, "--store", store_path)

    assert code == OK
    assert out.splitlines()[0] == f"saga {failed} (checkout): FAILED"
    assert 'failed step "pay": ValueError: card declined' in out
    table = [line.split()[:3] for line in out.split("\n\n", 1)[1].splitlines()[2:]]
    assert table == [
        ["1", "reserve", "committed"],
        ["2", "pay", "failed"],
        ["3", "undo", "reserve"],
    ]

    code, out, _ = run_cli(capsys, "show", failed, "--store", store_path, "--json")
    shown = json.loads(out)
    assert (shown["status"], shown["data"]["order_id"]) == ("FAILED", 1)
    assert [(r["step"], r["status"]) for r in shown["timeline"]] == [
        ("reserve", "COMMITTED"),
        ("pay", "FAILED"),
        ("reserve", "COMPENSATED"),
    ]


def test_show_of_an_unknown_saga_exits_3(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(cli_app.run_one(fail=False))

    code, _, err = run_cli(capsys, "show", "no-such-id", "--store", store_path)

    assert code == NOT_FOUND
    assert "no saga no-such-id" in err


def test_recover_finishes_a_crashed_saga_and_reports_it(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    crashed = asyncio.run(cli_app.crash_one())

    code, out, _ = run_cli(capsys, "recover", "--app", "tests.cli_app:recovering_engine")

    assert code == OK
    assert out.strip() == f"{crashed} (checkout): compensated"
    assert cli_app.LEDGER[-1] == "undo reserve"
    code, out, _ = run_cli(capsys, "recover", "--app", "tests.cli_app:recovering_engine")
    assert (code, out.strip()) == (OK, "nothing to recover")


def test_recover_exits_1_when_a_saga_is_refused(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(cli_app.crash_one())

    code, out, _ = run_cli(
        capsys, "recover", "--app", "tests.cli_app:engine_without_flows", "--json"
    )

    assert code == ATTENTION
    [refused] = json.loads(out)
    assert refused["outcome"] == "refused"
    assert 'no flow is registered as "checkout"' in refused["error"]


def test_retry_compensation_reruns_a_failed_compensation(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = asyncio.run(cli_app.run_with_broken_refund())
    cli_app.REFUND_WORKS["value"] = True

    code, out, _ = run_cli(
        capsys, "retry-compensation", broken, "--app", "tests.cli_app:recovering_engine"
    )

    assert code == OK
    assert out.strip() == f"{broken} (checkout): compensated"
    assert cli_app.LEDGER[-1] == "undo reserve"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recover", "--app", "nowhere"], "write MODULE:ATTRIBUTE"),
        (["recover", "--app", "tests.no_such_module:engine"], "cannot import it"),
        (["recover", "--app", "tests.cli_app:LEDGER"], "expected a SagaEngine with a store"),
        (["list", "--store", "redis://x"], "use sqlite:////path/to/sagas.db or postgresql://"),
        (["list", "--store", "sqlite:"], "give a file"),
    ],
)
def test_usage_errors_exit_2_saying_what_to_write(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, *args)

    assert code == USAGE
    assert message in err


def test_a_store_that_is_not_one_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)

    code, _, err = run_cli(capsys, "list", "--store", str(junk))

    assert code == STORE_FAILED
    assert "cannot be opened as a saga store" in err or "not a usable SQLite" in err


def test_store_urls_name_their_store() -> None:
    assert isinstance(open_store("sqlite:////var/lib/sagas.db"), SqliteSagaStore)
    assert str(open_store("sqlite:////var/lib/sagas.db").path) == "/var/lib/sagas.db"  # type: ignore[attr-defined]
    assert type(open_store("postgresql://app@db/app", "sagas")).__name__ == "PostgresSagaStore"


def test_the_installed_command_and_python_m_run_the_same_cli(store_path: str) -> None:
    asyncio.run(cli_app.create_store())
    for command in (
        [sys.executable, "-m", "spakky_saga"],
        [str(Path(sys.executable).parent / "spakky-saga")],
    ):
        done = subprocess.run(
            [*command, "list", "--store", store_path],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (0, "no sagas\n"), done.stderr
