"""`spakky-saga-mypy` / `python -m spakky_saga_mypy`: mypy with this plugin enabled.

mypy has no `--plugin` flag (plugins come from its config), so this command parses mypy's
arguments and config exactly as `mypy` does, adds the plugin to the configured ones, and
runs the build with mypy's own output and exit codes (0 clean, 1 errors, 2 crash/blocker).
`--plugin NAME` is accepted (repeatable) and adds NAME too; naming this plugin is harmless.
"""

import sys
import time
from collections.abc import Sequence
from typing import Final, TextIO

from mypy import util
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build

PLUGIN: Final = "spakky_saga_mypy"
_FLAG: Final = "--plugin"


def split_plugin_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate `--plugin NAME` / `--plugin=NAME` from the arguments mypy understands."""
    plugins: list[str] = []
    rest: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == _FLAG:
            name = next(arguments, None)
            if name is None:
                raise SystemExit(f"{_FLAG} needs a plugin name, e.g. {_FLAG} {PLUGIN}")
            plugins.append(name)
        elif argument.startswith(_FLAG + "="):
            plugins.append(argument.removeprefix(_FLAG + "="))
        else:
            rest.append(argument)
    return plugins, rest


def with_plugins(configured: Sequence[str], extra: Sequence[str]) -> list[str]:
    """The configured plugins, then ours and any extra ones, each once, order kept."""
    result = list(configured)
    for name in (PLUGIN, *extra):
        if name not in result:
            result.append(name)
    return result


def run(argv: Sequence[str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run mypy on `argv` with the plugin; return mypy's exit code."""
    started = time.time()
    extra, arguments = split_plugin_flags(argv)
    fscache = FileSystemCache()
    sources, options = process_options(arguments, stdout=stdout, stderr=stderr, fscache=fscache)
    options.plugins = with_plugins(options.plugins, extra)
    options.fast_exit = False
    formatter = util.FancyFormatter(
        stdout, stderr, options.hide_error_codes, hide_success=bool(options.output)
    )
    _, messages, blockers = run_build(sources, options, fscache, started, stdout, stderr)
    n_errors, n_notes, n_files = util.count_stats(messages)
    code = 0
    if messages and n_notes < len(messages):
        code = 2 if blockers else 1
    if options.error_summary:
        if n_errors:
            stdout.write(
                formatter.format_error(
                    n_errors,
                    n_files,
                    len(sources),
                    blockers=blockers,
                    use_color=options.color_output,
                )
                + "\n"
            )
        elif not messages or n_notes == len(messages):
            stdout.write(formatter.format_success(len(sources), options.color_output) + "\n")
        stdout.flush()
    return code


def main() -> None:
    """Console entry point."""
    sys.exit(run(sys.argv[1:]))
