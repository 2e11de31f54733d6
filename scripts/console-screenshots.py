"""Redo the console's screenshots in docs/ (console-list.png, console-saga.png).

Fills a temporary SQLite store with a few checkout sagas (completed, failed and compensated,
one whose engine "died" mid-way, one whose compensation failed), starts the console on it as
an operator would (`python -m spakky_saga console`), and photographs the list and the saga
whose compensation failed (its flow with the run's path, its errors with a traceback open)
with Debian's headless Chromium through Playwright.

Run: `.venv/bin/python scripts/console-screenshots.py` (needs /usr/bin/chromium).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from spakky_saga import (
    AbstractSagaData,
    SagaCompensationFailedError,
    SagaEngine,
    SagaFlow,
    SqliteSagaStore,
    saga_flow,
    step,
)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Died(BaseException):
    """The process "dies" here (nothing more is written)."""


class Checkout(AbstractSagaData):
    order_id: int
    customer: str
    amount_cents: int
    paid: bool = False


def checkout(
    *, decline: bool = False, die: bool = False, refund_down: bool = False
) -> SagaFlow[Checkout]:
    async def reserve(data: Checkout) -> None:
        await asyncio.sleep(0.02)

    async def release(data: Checkout) -> None:
        if refund_down:
            raise ConnectionError("stock service unreachable: connection refused (10.0.4.7:443)")

    async def charge(data: Checkout) -> Checkout:
        await asyncio.sleep(0.03)
        if die:
            raise Died
        if decline:
            raise ValueError("card declined: insufficient funds")
        return dataclasses.replace(data, paid=True)

    async def refund(data: Checkout) -> None:
        await asyncio.sleep(0.01)

    async def ship(data: Checkout) -> None:
        await asyncio.sleep(0.02)

    return saga_flow(step(reserve, compensate=release), step(charge, compensate=refund), ship)


async def fill(path: str) -> str:
    """The sagas to show; the id of the one whose compensation failed."""
    engine = SagaEngine(store=SqliteSagaStore(path), log=False)
    customers = ["ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "frances"]
    shown = ""
    for n, customer in enumerate(customers):
        data = Checkout(order_id=1000 + n, customer=customer, amount_cents=1999 + 250 * n)
        shown = str(data.saga_id) if n == 7 else shown
        with contextlib.suppress(SagaCompensationFailedError):
            await engine.run(
                checkout(decline=n % 4 == 3, refund_down=n == 7), data, saga_name="checkout"
            )
    await engine.aclose()
    dying = SagaEngine(store=SqliteSagaStore(path), lease=timedelta(milliseconds=1), log=False)
    stuck = Checkout(order_id=1042, customer="alan", amount_cents=4200)
    with contextlib.suppress(Died):
        await dying.run(checkout(die=True), stuck, saga_name="checkout")
    await dying.aclose()
    return shown


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "sagas.db")
        stuck = await fill(path)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        command = [sys.executable, "-m", "spakky_saga", "console", "--store", path]
        options = ["--port", str(port), "--refresh", "0"]
        console = await asyncio.to_thread(subprocess.Popen, [*command, *options], cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            async with httpx.AsyncClient() as client:
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(url)).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise SystemExit("the console did not start in 30 s")
                    await asyncio.sleep(0.1)
            async with async_playwright() as driver:
                browser = await driver.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 720})
                await page.goto(url)
                await page.screenshot(path=str(ROOT / "docs" / "console-list.png"))
                await page.set_viewport_size({"width": 1280, "height": 1560})
                await page.goto(f"{url}sagas/{stuck}")
                await page.click("details.traceback >> nth=0 >> summary")
                # the top of the page: facts, flow and path, actions, timeline, errors
                await page.screenshot(path=str(ROOT / "docs" / "console-saga.png"))
                await browser.close()
        finally:
            console.send_signal(signal.SIGINT)
            console.wait(timeout=30)
    print("wrote docs/console-list.png and docs/console-saga.png")


if __name__ == "__main__":
    asyncio.run(main())
