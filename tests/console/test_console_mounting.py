"""docs/console.md's spakky-fastapi recipe, run as written: a spakky application whose own
FastAPI pod, built from its `SagaEngine` pod, mounts the console with the application's
authentication hook; the console shows and acts through the host's routes, with the
application's engine (its flows), and audits the host's operator."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext

from spakky_saga import PLUGIN_NAME, SagaEngine, SqliteSagaStore
from tests.console.test_console_app import DOCS, REMOTE, csrf_of
from tests.stores.test_store_contract import a_record, an_event

RECIPE = next(
    block.split("```", 1)[0]
    for block in DOCS.split("```python\n")[1:]
    if block.startswith("# shop/api.py")
)


async def test_the_spakky_fastapi_recipe_mounts_the_console_on_the_applications_fastapi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shop: dict[str, object] = {"__name__": "shop_api_recipe"}
    exec(compile(RECIPE, "docs/console.md", "exec", dont_inherit=True), shop)  # no __future__
    app = (
        SpakkyApplication(ApplicationContext())
        .add(shop["saga_engine"])  # type: ignore[arg-type] # a Pod function from the docs
        .add(shop["shop_api"])  # type: ignore[arg-type] # a Pod function from the docs
        .load_plugins(include={PLUGIN_NAME})
        .start()
    )
    store = shop["STORE"]
    assert isinstance(store, SqliteSagaStore)
    try:
        api = app.container.get(FastAPI)
        engine = app.container.get(SagaEngine)
        assert engine.store is store
        await store.begin(a_record("run-1"), [an_event(1, "saga_started")], 30)
        transport = httpx.ASGITransport(app=api, client=REMOTE)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as browser:
            stranger = await browser.get("/ops/sagas/")
            page = await browser.get("/ops/sagas/sagas/run-1", headers={"x-forwarded-user": "bob"})
            done = await browser.post(
                "/ops/sagas/sagas/run-1/cancel",
                data={"csrf": csrf_of(page.text)},
                headers={"x-forwarded-user": "bob"},
            )
            own_routes = await browser.get("/openapi.json")
        [entry] = await store.audit_trail("run-1")
    finally:
        app.stop()
        await store.close()
    assert stranger.status_code == 401
    assert "operator: bob" in page.text
    assert "needs the application" not in page.text  # the engine came with it: recover works
    assert done.status_code == 303
    assert done.headers["location"] == "http://shop/ops/sagas/sagas/run-1"
    assert (entry.action, entry.by, entry.origin) == ("cancel", "bob", REMOTE[0])
    assert own_routes.json()["info"]["title"] == "shop"
