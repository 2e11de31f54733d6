"""Every exit code of `spakky-saga` exactly as `--help` documents it (0 done, 1 needs
attention, 2 wrong usage, 3 no such saga, 4 the store failed, refused or does not exist),
one test each, run as a subprocess; and the help an installed user has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spakky_saga.cli import ATTENTION, NOT_FOUND, OK, STORE_FAILED, USAGE
from tests import cli_app
from tests.cli_app import spakky_saga, store_options
from tests.postgres_support import postgres_schema

RETRY = ("--app", "tests.cli_app:recovering_engine")


@pytest.fixture(autouse=True)
async def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with cli_app.environment_store("sqlite", tmp_path, monkeypatch):
        yield


async def test_exit_0_when_done() -> None:
    done_id = await cli_app.run_one(fail=False)

    done = spakky_saga("list", *store_options())

    assert done.returncode == OK
    assert done_id in done.stdout


async def test_exit_1_when_a_saga_needs_attention() -> None:
    await cli_app.crash_one()

    done = spakky_saga("recover", "--app", "tests.cli_app:engine_without_flows")

    assert done.returncode == ATTENTION
    assert "refused" in done.stdout


async def test_exit_2_for_retry_compensation_of_a_completed_saga() -> None:
    completed = await cli_app.run_one(fail=False)

    done = spakky_saga("retry-compensation", completed, *RETRY)

    assert done.returncode == USAGE
    assert done.stderr.splitlines() == [
        f"spakky-saga: saga {completed} (checkout) is COMPLETED: only COMPENSATION_FAILED "
        "sagas can be retried; it completed, so there is nothing to compensate"
    ]


async def test_exit_2_for_retry_compensation_of_an_unfinished_saga_pointing_at_recover() -> None:
    crashed = await cli_app.crash_one()

    done = spakky_saga("retry-compensation", crashed, *RETRY)

    assert done.returncode == USAGE
    assert "is RUNNING: only COMPENSATION_FAILED sagas can be retried" in done.stderr
    assert "`spakky-saga recover` finishes it" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--store", "redis://x"], "use sqlite:////path/to/sagas.db or postgresql://"),
        (["list", "--store", "x.db", "--since", "yesterday"], "not an ISO date or time"),
        (["list", "--store", "x.db", "--limit", "0"], "1 or more"),
        (["recover", "--app", "nowhere"], "write MODULE:ATTRIBUTE"),
        (["recover", "--app", "tests.cli_app:recovering_engine", "--wait", "soon"], "seconds"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_exit_2_for_wrong_usage(args: list[str], message: str) -> None:
    done = spakky_saga(*args)

    assert done.returncode == USAGE
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["show", "retry-compensation"])
async def test_exit_3_for_an_unknown_saga(command: str) -> None:
    await cli_app.create_store()
    where = store_options() if command == "show" else list(RETRY)

    done = spakky_saga(command, "no-such-id", *where)

    assert done.returncode == NOT_FOUND
    assert done.stderr == "spakky-saga: no saga no-such-id in the store\n"


def test_exit_4_when_the_store_is_not_one(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)

    done = spakky_saga("list", "--store", str(junk))

    assert done.returncode == STORE_FAILED
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["list"], ["show", "some-id"]])
def test_exit_4_and_nothing_created_when_a_read_only_command_finds_no_store(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo.db"

    done = spakky_saga(*command, "--store", str(missing))

    assert done.returncode == STORE_FAILED
    assert f"no saga store at {missing}: the file does not exist" in done.stderr
    assert not missing.exists()


def test_help_documents_every_exit_code_and_points_at_nothing_uninstalled() -> None:
    done = spakky_saga("--help")

    assert done.returncode == OK
    codes = done.stdout.split("exit codes:", 1)[1]
    for code, meaning in [
        (OK, "done"),
        (ATTENTION, "needs attention"),
        (USAGE, "wrong usage"),
        (NOT_FOUND, "no such saga"),
        (STORE_FAILED, "the store failed"),
    ]:
        assert f"  {code}  {meaning}" in codes
    assert "docs/" not in done.stdout
    recover_help = spakky_saga("recover", "--help").stdout
    assert "--wait [SECONDS]" in recover_help
    assert "exit codes:" in recover_help


async def test_a_read_only_command_on_a_schema_without_a_store_creates_nothing() -> None:
    async with postgres_schema() as (dsn, schema):
        done = await asyncio.to_thread(spakky_saga, "list", "--store", dsn, "--schema", schema)

        assert done.returncode == STORE_FAILED
        assert f'no saga store in schema "{schema}"' in done.stderr
        assert "did you mean --schema" in done.stderr
        import psycopg  # noqa: PLC0415 - the optional driver, for this check only

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                (schema,),
            )
            row = await cursor.fetchone()
        assert row == (0,)  # not even the schema was created
