"""The console in a real browser (Debian's headless Chromium, driven by Playwright), started
the way an operator starts it (`python -m spakky_saga console --store ... --app ...`) on a
SQLite file and on PostgreSQL, and stopped with SIGINT: an operator finds a stuck saga, reads
its timeline and recovers it from the page; answers an escalated saga from the page; markup
in saga data shows as text and runs nothing; acting needs the token."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests import cli_app
from tests.cli_app import ROOT, store_options
from tests.console.test_console_waits import escalating_engine, waiting_saga
from tests.stores.test_store_contract import a_record, an_event

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token"
HOSTILE = "<img src=x onerror=window.owned=1><script>window.owned=2</script>"


@dataclasses.dataclass
class Console:
    url: str
    process: subprocess.Popen[str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def running_console(*options: str) -> AsyncIterator[Console]:
    """`python -m spakky_saga console` on a free port, ready; stopped with SIGINT after, and
    checked to have exited 0 with nothing on stderr."""
    port = _free_port()
    command = [sys.executable, "-m", "spakky_saga", "console", *store_options()]
    command += ["--port", str(port), "--token", TOKEN, "--refresh", "1", *options]
    process = await asyncio.to_thread(
        subprocess.Popen,
        command,
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as probe:
            while True:
                assert process.poll() is None, process.communicate()
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(url)).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the console did not start in 30 s"
                await asyncio.sleep(0.1)
        yield Console(url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, err
    assert err == ""
    assert out.startswith(f"spakky-saga console: {url}\n  token (to log in and act): {TOKEN}\n")


@pytest.fixture(params=["sqlite", "postgresql"])
async def environment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    async with cli_app.environment_store(request.param, tmp_path, monkeypatch):
        yield


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _hostile_saga() -> None:
    store = cli_app.store()
    await store.open()
    try:
        record = dataclasses.replace(
            a_record("hostile-1", name="Order"), data=f'{{"note": "{HOSTILE}"}}', error=HOSTILE
        )
        failed = an_event(2, "step_failed")._replace(
            step_key="1", step="reserve", error_type="Boom", error=HOSTILE, traceback=HOSTILE
        )
        await store.begin(record, [an_event(1, "saga_started"), failed], 30)
    finally:
        await store.close()


async def _log_in(page: Page, url: str, token: str = TOKEN) -> None:
    await page.goto(url + "login")
    await page.fill("input[name=name]", "alice")
    await page.fill("input[name=token]", token)
    async with page.expect_navigation():
        await page.click("button[type=submit]")


@pytest.mark.usefixtures("environment")
async def test_an_operator_finds_a_stuck_saga_reads_its_timeline_and_recovers_it(
    browser: Browser,
) -> None:
    await cli_app.create_store()
    done = await cli_app.run_one(fail=False)
    stuck = await cli_app.crash_one()  # its engine "died" in pay; its 1 ms lease expired
    async with running_console("--app", "tests.cli_app:recovering_engine") as console:
        page = await browser.new_page()
        await page.goto(console.url)
        assert await page.inner_text("a.count[data-status=RUNNING] strong") == "1"
        assert await page.inner_text("a.count[data-status=COMPLETED] strong") == "1"
        assert await page.locator("a.saga-link").count() == 2

        await page.click("a.count[data-status=RUNNING]")  # filter by status
        await page.wait_for_url("**status=RUNNING**")
        assert await page.locator("a.saga-link").all_inner_texts() == [stuck]
        await page.fill("input[name=id]", done[:8])
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url("**id=**")
        assert await page.locator("a.saga-link").count() == 0

        await page.goto(console.url + "attention")
        await page.click(f"a.saga-link:text('{stuck}')")  # open the saga
        await page.wait_for_selector("#timeline")
        timeline = await page.locator("#timeline tbody tr").all_inner_texts()
        assert timeline[0].split("\t")[:3] == ["reserve", "1", "COMMITTED"]
        assert timeline[1].split("\t")[:3] == ["pay", "1", "RUNNING"]
        assert await page.is_disabled("button[value=recover]")  # not logged in yet

        await _log_in(page, console.url)
        await page.goto(console.url + f"sagas/{stuck}")
        await page.click("button[value=recover]")
        await page.wait_for_selector("#audit td:text('recover')")
        assert await page.inner_text("#saga-status") == "FAILED"
        audit = await page.inner_text("#audit tbody")
        assert "alice" in audit
        assert "127.0.0.1" in audit
        assert "recovered: compensated" in audit
        assert "undo reserve" in await page.inner_text("#timeline")
    saved = await cli_app.load_saga(stuck)
    assert saved.owner is None
    assert saved.status.value == "FAILED"


@pytest.mark.usefixtures("environment")
async def test_markup_in_saga_data_shows_as_text_and_runs_nothing(browser: Browser) -> None:
    await cli_app.create_store()
    await _hostile_saga()
    dialogs: list[str] = []
    async with running_console() as console:
        page = await browser.new_page()
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        await page.goto(console.url + "sagas/hostile-1")
        assert HOSTILE in await page.inner_text("#saga-data")
        assert HOSTILE in await page.inner_text("dl.facts")
        assert HOSTILE in await page.inner_text("#error-2 pre.error-message")
        await page.click("#error-2 details.traceback summary")
        assert HOSTILE in await page.inner_text("#error-2 details.traceback pre")
        await page.goto(console.url)
        assert HOSTILE[:40] in await page.inner_text("td.error")
        assert await page.evaluate("window.owned === undefined")
        assert await page.locator("#main img, #main script").count() == 0
    assert dialogs == []


@pytest.mark.usefixtures("environment")
async def test_acting_needs_the_token_and_the_page_form(browser: Browser) -> None:
    await cli_app.create_store()
    await _hostile_saga()
    async with running_console() as console:
        page = await browser.new_page()
        await page.goto(console.url + "sagas/hostile-1")
        assert await page.is_disabled("button[value=cancel]")
        assert "log in to act" in await page.inner_text("section.actions")
        forged = await page.evaluate(
            "fetch('cancel', {method: 'POST'}).then(r => r.status)".replace(
                "'cancel'", "'/sagas/hostile-1/cancel'"
            )
        )
        assert forged == 401

        await _log_in(page, console.url, token="a guess")
        assert "That token is not this console" in await page.inner_text("main")

        await _log_in(page, console.url)
        without_csrf = await page.evaluate(
            "fetch('/sagas/hostile-1/cancel', {method: 'POST'}).then(r => r.status)"
        )
        assert without_csrf == 403
        await page.goto(console.url + "sagas/hostile-1")
        await page.click("button[value=cancel]")
        await page.wait_for_selector("#audit td:text('cancel')")
        assert "requested" in await page.inner_text("#audit tbody")
        assert "cancel was requested by alice" in await page.inner_text("section.actions")


@pytest.mark.usefixtures("environment")
async def test_the_list_shows_a_new_saga_by_itself_while_live(browser: Browser) -> None:
    await cli_app.create_store()
    async with running_console() as console:
        page = await browser.new_page()
        await page.goto(console.url)
        assert await page.is_checked("#live")
        assert await page.locator("a.saga-link").count() == 0
        await _hostile_saga()
        await page.wait_for_selector("a.saga-link:text('hostile-1')", timeout=15_000)
        assert await page.inner_text("a.count[data-status=RUNNING] strong") == "1"


@pytest.mark.usefixtures("environment")
async def test_an_operator_reads_a_traceback_and_the_path_then_bulk_recovers_dead_sagas(
    browser: Browser,
) -> None:
    await cli_app.create_store()
    failed = await cli_app.run_one(fail=True)
    dead = sorted([await cli_app.crash_one(), await cli_app.crash_one()])
    async with running_console("--app", "tests.cli_app:recovering_engine") as console:
        page = await browser.new_page()
        await page.goto(console.url + f"sagas/{failed}")
        marks = {
            await box.get_attribute("data-step"): await box.get_attribute("data-mark")
            for box in await page.locator("#flow .flow-box").all()
        }
        assert marks == {"reserve": "compensated", "pay": "failed"}
        timeline = await page.locator("#timeline tbody tr").all_inner_texts()
        assert [row.split("\t")[:3] for row in timeline] == [
            ["reserve", "1", "COMMITTED"],
            ["pay", "1", "FAILED"],
            ["undo reserve", "1", "COMPENSATED"],
        ]
        failure = page.locator(".failure", has_text="card declined").first
        assert await failure.locator(".error-type").inner_text() == "ValueError"
        await failure.locator("summary").click()
        traceback = await failure.locator("details.traceback pre").inner_text()
        assert traceback.startswith("Traceback (most recent call last):")
        assert "in pay" in traceback
        assert traceback.rstrip().endswith("ValueError: card declined")

        await page.goto(console.url)
        await page.click("a.count[data-status=RUNNING]")  # the filter
        await page.wait_for_url("**status=RUNNING**")
        await page.click("a.bulk-recover")
        await page.wait_for_selector("#dry-run")
        assert await page.inner_text("#selected") == "2"
        assert await page.inner_text("#applicable") == "2"
        assert await page.is_disabled("#confirm")  # not logged in: a dry run only
        forged = await page.evaluate(
            "fetch('/bulk/recover', {method: 'POST', body: new URLSearchParams("
            f"{{saga: '{dead[0]}'}})}}).then(r => r.status)"
        )
        assert forged == 401

        await _log_in(page, console.url)
        await page.goto(console.url + "?status=RUNNING")
        await page.click("a.bulk-recover")
        await page.wait_for_selector("#dry-run")
        await page.click("#confirm")
        await page.wait_for_selector("#bulk-done")
        rows = await page.locator("#bulk-done tbody tr").all_inner_texts()
        assert sorted(rows) == [f"{saga_id}\trecovered: compensated" for saga_id in dead]

        await page.goto(console.url)
        assert await page.inner_text("a.count[data-status=RUNNING] strong") == "0"
        assert await page.inner_text("a.count[data-status=FAILED] strong") == "3"
        await page.goto(console.url + f"sagas/{dead[0]}")
        audit = await page.inner_text("#audit tbody")
        assert "alice" in audit
        assert "127.0.0.1" in audit
    for saga_id in dead:
        assert (await cli_app.load_saga(saga_id)).status.value == "FAILED"


@pytest.mark.usefixtures("environment")
async def test_an_operator_answers_an_escalated_saga_and_sees_its_new_state(
    browser: Browser,
) -> None:
    await cli_app.create_store()
    engine = escalating_engine()
    escalated = await waiting_saga(engine, "shipment")
    await engine.aclose()
    app = "tests.console.test_console_waits:escalating_engine"
    async with running_console("--app", app) as console:
        page = await browser.new_page()
        await _log_in(page, console.url)
        await page.goto(console.url + "attention")
        await page.click(f"a.saga-link:text('{escalated}')")
        await page.wait_for_selector("#wait")
        assert await page.inner_text("#saga-status") == "WAITING"
        assert "ship" in await page.inner_text("#wait-step")
        assert "ConnectionError" in await page.inner_text("#escalation-error")

        await page.click("#resolve-form button[value=skip]")
        await page.wait_for_selector("#audit td:text('resolve')")
        assert await page.inner_text("#saga-status") == "COMPLETED"
        assert "decided skip" in await page.inner_text("#audit tbody")
        assert "alice" in await page.inner_text("#audit tbody")
        assert await page.locator("#wait").count() == 0
    saved = await cli_app.load_saga(escalated)
    assert saved.status.value == "COMPLETED"
