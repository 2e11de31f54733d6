"""A SQLite store touches nothing that is not its own: read-only opening (`create=False`)
creates nothing, another application's database is left byte for byte as it was, a file cut
short is refused as damaged (never read as NULs), and a path that cannot hold a store says
exactly why."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from spakky_saga import (
    SagaEngine,
    SagaStore,
    SagaStoreDamagedError,
    SagaStoreLocationError,
    SagaStoreNotFoundError,
    SqliteSagaStore,
    saga_flow,
)
from tests.durable_support import Ticket


async def _open_and_list(store: SagaStore) -> int:
    try:
        await store.open()
        return len(await store.list())
    finally:
        await store.close()


async def _a_store_with_sagas(path: Path, sagas: int = 40) -> None:
    async def reserve(data: Ticket) -> None:
        return None

    engine = SagaEngine(store=SqliteSagaStore(path, synchronous="NORMAL"), log=False)
    for order in range(sagas):
        await engine.run(saga_flow(reserve), Ticket(order_id=order), saga_name="order")
    await engine.aclose()


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- read-only opening (create=False) --------------------------------------------------------


async def test_opening_a_missing_file_without_create_says_so_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nope.db"

    with pytest.raises(SagaStoreNotFoundError, match="does not exist") as refused:
        await _open_and_list(SqliteSagaStore(path, create=False))

    assert f"no saga store at {path}" in str(refused.value)
    assert _files(tmp_path) == []


async def test_reading_a_missing_file_without_create_raises_and_creates_nothing(
    tmp_path: Path,
) -> None:
    store = SqliteSagaStore(tmp_path / "nope.db", create=False)

    with pytest.raises(SagaStoreNotFoundError):
        await store.list()
    with pytest.raises(SagaStoreNotFoundError):
        await store.load("s1")
    await store.close()

    assert _files(tmp_path) == []


async def test_opening_an_empty_file_without_create_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    with pytest.raises(SagaStoreNotFoundError, match="empty database"):
        await _open_and_list(SqliteSagaStore(path, create=False))

    assert _files(tmp_path) == ["empty.db"]
    assert path.stat().st_size == 0


async def test_an_existing_store_opens_without_create(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    await _a_store_with_sagas(path, sagas=3)

    assert await _open_and_list(SqliteSagaStore(path, create=False)) == 3


# --- another application's database -----------------------------------------------------------


async def test_another_application_s_database_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO customers (name) VALUES ('Ada')")
    db.commit()
    db.close()
    content = path.read_bytes()

    for create in (True, False):
        with pytest.raises(SagaStoreLocationError, match=r"holds other tables \(customers\)"):
            await _open_and_list(SqliteSagaStore(path, create=create))

    assert _files(tmp_path) == ["shop.db"]  # no -wal, no -shm
    assert path.read_bytes() == content  # still in its own journal mode, every byte as it was
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    db.close()


# --- damage -------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [16, 40, 100, 180, 1000])
async def test_a_store_cut_short_inside_its_last_page_is_refused_as_damaged(
    tmp_path: Path, cut: int
) -> None:
    original = tmp_path / "original.db"
    await _a_store_with_sagas(original)  # closed cleanly: no WAL left, all in the file
    path = tmp_path / "sagas.db"
    shutil.copy(original, path)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size - cut)

    for create in (True, False):
        with pytest.raises(SagaStoreDamagedError, match="is damaged") as refused:
            await _open_and_list(SqliteSagaStore(path, create=create))
        assert str(path) in str(refused.value)
        assert "restore it from a backup" in str(refused.value)


async def test_a_durable_engine_on_a_truncated_store_stops_with_the_damage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    await _a_store_with_sagas(path)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size - 40)  # read as NULs before: a codec error at recovery
    engine = SagaEngine(store=SqliteSagaStore(path), log=False)

    with pytest.raises(SagaStoreDamagedError, match="is damaged"):
        await engine.recover()

    await engine.aclose()


# --- where the file is -----------------------------------------------------------------------


async def test_a_sqlite_url_names_the_file_as_the_cli_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)

    assert await _open_and_list(SqliteSagaStore("sqlite:///data/sagas.db")) == 0
    assert await _open_and_list(SqliteSagaStore(f"sqlite:///{tmp_path}/data/sagas.db")) == 0

    assert _files(tmp_path / "data") == ["sagas.db"]
    assert SqliteSagaStore("sqlite:///data/sagas.db").path == Path("data/sagas.db")
    assert SqliteSagaStore(f"sqlite:///{tmp_path}/x.db").path == tmp_path / "x.db"


def test_a_sqlite_url_with_a_host_is_refused() -> None:
    with pytest.raises(SagaStoreLocationError, match=r"sqlite:///relative\.db"):
        SqliteSagaStore("sqlite://server/sagas.db")


@pytest.mark.parametrize("empty", ["", "sqlite:///"])
def test_an_empty_path_is_refused_as_empty(empty: str) -> None:
    with pytest.raises(SagaStoreLocationError, match="the path is empty"):
        SqliteSagaStore(empty)


async def test_a_directory_is_refused_as_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SagaStoreLocationError, match="is a directory, not a file") as refused:
        await _open_and_list(SqliteSagaStore(tmp_path))

    assert str(tmp_path) in str(refused.value)
    assert "is it a SQLite database" not in str(refused.value)


async def test_a_missing_directory_is_refused_as_missing_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "sagas.db"

    with pytest.raises(SagaStoreLocationError, match="does not exist") as refused:
        await _open_and_list(SqliteSagaStore(path))

    assert f"its directory {tmp_path / 'nowhere'} does not exist" in str(refused.value)
    assert _files(tmp_path) == []
