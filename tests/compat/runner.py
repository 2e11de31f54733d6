"""Runs every scenario (or those named) on one package and prints the observations as JSON.

    python -m tests.compat.runner upstream [scenario ...]   # spakky.saga, in .venv/upstream
    python -m tests.compat.runner ours [scenario ...]       # spakky_saga

Run from the repository root. Each scenario runs in its own event loop; one that raises or
hangs is recorded as `{"crashed": ...}` so the others still run and compare.
"""

import asyncio
import importlib
import json
import sys
from types import ModuleType

from spakky.core.common.mutability import immutable

import tests.compat.scenarios  # noqa: F401 - the scenarios register themselves on import
from tests.compat.harness import SCENARIOS, Kit, Observation

PACKAGES = {"upstream": "spakky.saga", "ours": "spakky_saga"}
SCENARIO_TIME_LIMIT = 5.0  # seconds; every scenario takes a few milliseconds


def kit_for(package: str) -> Kit:
    module: ModuleType = importlib.import_module(PACKAGES[package])
    sites: list[tuple[object, str]] = [(asyncio, "sleep")]
    # Upstream binds asyncio.sleep into its engine module when it is imported.
    engine = importlib.import_module(PACKAGES[package] + ".engine")
    sites.extend((engine, name) for name, value in vars(engine).items() if value is asyncio.sleep)
    return Kit(package, module, immutable, tuple(sites))


async def _run_one(kit: Kit, name: str) -> Observation:
    async with asyncio.timeout(SCENARIO_TIME_LIMIT):
        return await SCENARIOS[name](kit)


def run(package: str, names: list[str]) -> dict[str, Observation]:
    kit = kit_for(package)
    observations: dict[str, Observation] = {}
    for name in names or list(SCENARIOS):
        try:
            observations[name] = asyncio.run(_run_one(kit, name))
        except BaseException as error:  # recorded, so that the other scenarios still run
            if isinstance(error, KeyboardInterrupt):
                raise
            observations[name] = {"crashed": f"{type(error).__name__}: {error}"}
    return observations


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in PACKAGES:
        print(f"usage: python -m tests.compat.runner {{{'|'.join(PACKAGES)}}} [scenario ...]")
        return 2
    json.dump(run(argv[0], argv[1:]), sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
