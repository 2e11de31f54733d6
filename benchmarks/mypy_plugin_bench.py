"""What the mypy plugin adds to check time: cold `mypy --strict` with and without it.

Generates saga modules into a temporary directory, each a saga class over its own data type
with six `@saga_step` methods combined with `>>`, `&` and `|` in `flow()`, and times a cold
`mypy --strict --no-incremental` over them with and without the plugin (CPU time of the mypy
process), alternating the two so that machine noise hits both alike, keeping the best of
`--repeats`. Doing the same with fewer
modules gives the cost per extra module, which is free of mypy's fixed start-up (typeshed,
spakky, the library). Run: `.venv/bin/python benchmarks/mypy_plugin_bench.py`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MODULE = """\
from spakky_saga import AbstractSaga, AbstractSagaData, Retry, SagaFlow, Skip, saga_flow, saga_step


class Data{n}(AbstractSagaData):
    value: int = 0


class Saga{n}(AbstractSaga[Data{n}]):
    @saga_step
    async def reserve(self, data: Data{n}) -> Data{n}:
        return data

    @saga_step
    async def release(self, data: Data{n}) -> None:
        return None

    @saga_step
    async def charge(self, data: Data{n}) -> Data{n}:
        return data

    @saga_step
    async def refund(self, data: Data{n}) -> None:
        return None

    @saga_step
    async def notify(self, data: Data{n}) -> None:
        return None

    @saga_step
    async def confirm(self, data: Data{n}) -> Data{n} | None:
        return None

    def flow(self) -> SagaFlow[Data{n}]:
        return saga_flow(
            (self.reserve >> self.release) & (self.charge >> self.refund),
            self.notify | Skip(),
            self.confirm | Retry(3),
        )
"""

CONFIG = "[mypy]\nstrict = True\n{plugins}"


def generate(directory: Path, modules: int) -> None:
    package = directory / "sagas"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for n in range(modules):
        (package / f"saga_{n:03d}.py").write_text(MODULE.format(n=n))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check(directory: Path, *, plugin: bool) -> float:
    """CPU seconds of one cold mypy run over `directory/sagas`; fails loudly on any error.

    CPU time (user + system) of the mypy process, not wall time: other processes on a busy
    machine then only add noise upwards, which the best of several runs removes.
    """
    config = directory / ("with.ini" if plugin else "without.ini")
    config.write_text(CONFIG.format(plugins="plugins = spakky_saga_mypy\n" if plugin else ""))
    started = _children_cpu()
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--config-file", str(config)),
            *("--no-incremental", "--cache-dir", "/dev/null", "sagas"),
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = _children_cpu() - started
    if completed.returncode != 0:
        raise SystemExit(f"mypy failed:\n{completed.stdout}{completed.stderr}")
    return elapsed


def plugin_self_time(modules: int) -> tuple[float, float]:
    """(CPU seconds inside the plugin's hooks, CPU seconds of the whole run) for one
    in-process cold run, on the main thread: a direct measure, less noisy than whole runs."""
    from mypy import api  # noqa: PLC0415 - only this measurement runs mypy in-process

    from spakky_saga_mypy.plugin import SpakkySagaPlugin  # noqa: PLC0415

    spent = [0.0]

    def timed(function: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object) -> object:
            started = time.thread_time()
            try:
                result = function(*args)
            finally:
                spent[0] += time.thread_time() - started
            return timed(result) if callable(result) and not isinstance(result, type) else result

        return run

    originals = {name: getattr(SpakkySagaPlugin, name) for name in _HOOK_GETTERS}
    for name, getter in originals.items():
        setattr(SpakkySagaPlugin, name, timed(getter))
    try:
        with tempfile.TemporaryDirectory(prefix="saga-mypy-bench-") as name:
            directory = Path(name)
            generate(directory, modules)
            config = directory / "with.ini"
            config.write_text(CONFIG.format(plugins="plugins = spakky_saga_mypy\n"))
            started = time.thread_time()
            stdout, _, code = api.run(
                [
                    *("--config-file", str(config), "--no-incremental"),
                    *("--cache-dir", "/dev/null", str(directory / "sagas")),
                ]
            )
            total = time.thread_time() - started
    finally:
        for name, getter in originals.items():
            setattr(SpakkySagaPlugin, name, getter)
    if code != 0:
        raise SystemExit(f"mypy failed:\n{stdout}")
    return spent[0], total


_HOOK_GETTERS = (
    "get_function_signature_hook",
    "get_function_hook",
    "get_method_signature_hook",
    "get_method_hook",
)


def best_times(modules: int, repeats: int) -> tuple[float, float]:
    """(without, with) plugin: the best of `repeats` alternating cold runs."""
    with tempfile.TemporaryDirectory(prefix="saga-mypy-bench-") as name:
        directory = Path(name)
        generate(directory, modules)
        check(directory, plugin=False)  # warm-up: OS file cache, .pyc files of mypy's imports
        check(directory, plugin=True)
        without: list[float] = []
        with_plugin: list[float] = []
        for _ in range(repeats):
            without.append(check(directory, plugin=False))
            with_plugin.append(check(directory, plugin=True))
        return min(without), min(with_plugin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=200)
    parser.add_argument("--fewer", type=int, default=50, help="the smaller run, per-module cost")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    small_without, small_with = best_times(args.fewer, args.repeats)
    big_without, big_with = best_times(args.modules, args.repeats)
    extra = args.modules - args.fewer
    per_module_without = (big_without - small_without) / extra
    per_module_with = (big_with - small_with) / extra

    print(f"cold mypy --strict --no-incremental: CPU time, best of {args.repeats} alternating runs")
    print(f"{'':34}{'without':>10}{'with plugin':>14}{'ratio':>9}")
    for label, without, with_plugin in (
        (f"{args.fewer} saga modules (s)", small_without, small_with),
        (f"{args.modules} saga modules (s)", big_without, big_with),
        ("per extra module (ms)", per_module_without * 1000, per_module_with * 1000),
    ):
        print(f"{label:34}{without:>10.3f}{with_plugin:>14.3f}{with_plugin / without:>9.3f}")
    cold = big_with / big_without - 1
    marginal = per_module_with / per_module_without - 1
    print(f"plugin adds {cold:+.1%} to the cold check of {args.modules} modules (target <= +15%)")
    print(f"plugin adds {marginal:+.1%} per extra module (target <= +30%)")
    inside, total = plugin_self_time(args.modules)
    print(
        f"CPU time inside the plugin's hooks, timing overhead included (in-process run of "
        f"{args.modules} modules and the library): "
        f"{inside * 1000:.0f} ms of {total:.2f} s ({inside / total:.1%}), "
        f"{inside / args.modules * 1e6:.0f} us per module"
    )


if __name__ == "__main__":
    main()
